"""Source trees: a role + a git repository at a ref (or a plain directory), listed and read by blob id.

Git sources are always fetched into flowscan's cache (``cache_dir/repos/<slug>-<hash>.git``), whether the
user named a URL or a local repository, so that a local path behaves exactly like its upstream remote
(and the user's repository is only ever read). The clone is bare, shallow (``--depth 1``: one commit per
ref) and partial (``--filter=blob:none``): a ref costs its commit and trees; the blobs of the .c/.h files
in scope are fetched afterwards in ONE request (``git fetch --stdin`` with their ids, the request git's
own lazy fetch makes, but in bulk). What the server can do is read from the packet trace of the
``ls-remote`` that resolves the ref: no filter -> a shallow full snapshot, no depth either (dumb HTTP) ->
a full clone; a promisor clone is never made against a server that cannot serve one. Local servers are
told to allow the filter through ``remote.origin.uploadpack``. A second ref on an existing clone is
fetched into it; a tag or commit already there is used without touching the network.

A tag already in the clone is checked against the remote with one ``ls-remote`` (a tag can be moved
upstream): re-fetched when it moved; when the remote cannot be asked, the cached commit is used and the
user is told which one and how old it is. Commit ids are immutable and never checked.

The clone is made by GitPython (``Repo.init`` of a bare repository, its configuration written by
GitPython's config writer, then the same ``fetch`` a later ref uses) rather than ``Repo.clone_from``:
``git clone`` takes no commit id (before git 2.49) and would record promisor settings before the
remote's capabilities are known. Transfers report through a ``RemoteProgress`` forwarded to the caller's
`Progress`, under the watchdog of `flowscan.sources.git.run_network`.

Refs and URLs from users are validated before they reach git, and every git call runs fenced
(`flowscan.sources.git`): ``GIT_ALLOW_PROTOCOL`` restricted to file/git/http(s)/ssh as a second fence, the
repository pinned, no template hooks in the clone and ``core.hooksPath`` pointing nowhere.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import git as gitpython

from flowscan.errors import FlowscanError
from flowscan.fileio import atomic_write_text
from flowscan.progress import NULL, Progress
from flowscan.sources.git import (ForwardProgress, GitFailed, clone_problem, config_bool, http_limits, init_bare,
                                  locked, names_damage, outside, repo_at, run, run_network)
from flowscan.sources.git import network_timeout as timeout_setting
from flowscan.sources.refs import FULL_HEX, HEX, Source, is_local_path, local_transport, show, validate_ref, validate_repo
from flowscan.sources.trees import DirTree, GitTree, Tree


# What a local "server" (git upload-pack run on a repository on this machine) is told to allow: the blob
# filter and fetching blobs by id. A real remote decides this for itself; git strips GIT_CONFIG_* from the
# environment of local transports, so this goes into remote.origin.uploadpack of the cache clone.
LOCAL_UPLOAD_PACK = ("git -c uploadpack.allowFilter=true -c uploadpack.allowAnySHA1InWant=true "
                      "-c pack.window=0 upload-pack")
RECHECK_TIMEOUT = 10.0  # at most this long asking whether a cached tag moved (then the cached one is used)
FETCHED = "flowscan-fetched.json"  # in each clone: ref -> when it was last fetched (unix time)


def repos_dir(cache_dir: Path) -> Path:
    return Path(cache_dir) / "repos"


def _normalize_repo(repo: str) -> str:
    if is_local_path(repo):
        path = Path(repo).expanduser()
        if not path.exists():
            raise FlowscanError(f"no such repository: {repo}")
        return os.path.realpath(path)
    return repo.rstrip("/")


def clone_dir(cache_dir: Path, repo: str) -> Path:
    """Where the cache clone of ``repo`` lives: repos/<slug-of-url>-<short sha256 of url>.git."""
    key = _normalize_repo(repo)
    tail = re.split(r"[/:]", key.rstrip("/"))[-1] or "repo"
    if tail.endswith(".git"):
        tail = tail[:-4]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", tail).strip(".-")[:40] or "repo"
    return repos_dir(cache_dir) / f"{slug}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.git"


@dataclass
class _Remote:
    url: str  # what git is given (local paths made absolute)
    shown: str  # what the user gave, for messages
    local: bool  # git runs upload-pack on this machine (local path, file://)
    refs: dict[str, str]  # refname -> object id, for the ref asked about
    partial: bool  # the server honours --filter=blob:none
    shallow: bool  # the server serves --depth


_TRACE_RECEIVED = re.compile(r"packet:\s+\S+< (.*)$")


def _ls_remote(url: str, shown: str, ref: str, local: bool, timeout: float) -> _Remote:
    """Ask the remote about ``ref``; the packet trace also tells what the server can do.

    Protocol v2 servers list their fetch features ("fetch=shallow wait-for-done filter"), v0 servers
    append capabilities to the first ref; a dumb HTTP server lists nothing and gets neither a filter nor a
    depth (asking a dumb server for a filter leaves a promisor clone that recurses into lazy fetches).
    """
    args = [*http_limits(timeout), "ls-remote"]
    if local:
        args.append(f"--upload-pack={LOCAL_UPLOAD_PACK}")
    args += ["--", url, ref or "HEAD"]
    try:
        out, err = run_network(outside(), args, timeout=timeout, what=f"cannot reach repository {shown}",
                               env={"GIT_TRACE_PACKET": "1"})
    except GitFailed as exc:
        if local and ("not a git repository" in exc.stderr or "does not appear" in exc.stderr):
            raise FlowscanError(f"not a git repository: {shown}") from None
        raise FlowscanError(f"cannot reach repository {shown}: {exc.message}") from None
    caps: set[str] = set()
    for line in err.splitlines():
        m = _TRACE_RECEIVED.search(line)
        if not m:
            continue
        text = m.group(1)
        if text.startswith("fetch="):
            caps.update(text[len("fetch="):].split())
        elif "\\0" in text:
            caps.update(text.split("\\0", 1)[1].split())
    refs = {}
    for line in out.decode("utf-8", "replace").splitlines():
        oid, _, name = line.partition("\t")
        refs[name] = oid
    return _Remote(url, shown, local, refs, partial="filter" in caps, shallow="shallow" in caps)


def _pick_remote_ref(ref: str, refs: dict[str, str]) -> str | None:
    if not ref:
        return "HEAD" if "HEAD" in refs else None
    for name in (ref, f"refs/tags/{ref}", f"refs/heads/{ref}"):
        if name in refs and (name.startswith("refs/") or name == "HEAD"):
            return name
    return None


@dataclass(frozen=True)
class _Cached:
    name: str  # refs/tags/<tag> or refs/flowscan/commits/<id>
    oid: str  # what the ref points at (a tag object for annotated tags)
    commit: str


def _local_ref(repo: gitpython.Repo, ref: str) -> _Cached | None:
    """An immutable-looking ref (tag or commit id) already in the clone, without any fetch."""
    if not ref:
        return None
    names = []
    if ref.startswith("refs/tags/"):
        names.append(ref)
    elif not ref.startswith("refs/"):
        names.append(f"refs/tags/{ref}")
    out = run(repo.git, ["for-each-ref", "--format=%(refname) %(objectname)", "refs/tags/",
                         "refs/flowscan/commits/"]).decode("utf-8", "replace")  # GitFailed: a damaged clone
    have = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    for name in names:
        if name in have:
            return _Cached(name, have[name], _peel(repo, name))
    if HEX.fullmatch(ref):
        hits = [n for n in have if n.startswith("refs/flowscan/commits/" + ref)]
        if len(hits) == 1:
            commit = hits[0].rsplit("/", 1)[1]
            return _Cached(hits[0], commit, commit)
    return None


def _peel(repo: gitpython.Repo, name: str) -> str:
    return run(repo.git, ["rev-parse", "--verify", "-q", f"{name}^{{commit}}"]).decode().strip()


def _init_clone(tmp: Path, remote: _Remote) -> gitpython.Repo:
    repo = init_bare(tmp)
    settings = [('remote "origin"', "url", remote.url),
                ("gc", "auto", "0"),  # no background gc racing other flowscan processes
                ("fetch", "writeCommitGraph", "false"),
                ("core", "hooksPath", os.devnull),  # no hook ever runs in a cache clone
                ("flowscan", "partial", str(remote.partial).lower()),
                ("flowscan", "shallow", str(remote.shallow).lower())]
    if remote.partial:
        settings += [('remote "origin"', "promisor", "true"),
                     ('remote "origin"', "partialclonefilter", "blob:none"),
                     ("core", "repositoryformatversion", "1"),
                     ("extensions", "partialClone", "origin")]
    if remote.local:
        settings.append(('remote "origin"', "uploadpack", LOCAL_UPLOAD_PACK))
    with repo.config_writer() as cw:
        for section, option, value in settings:
            cw.set_value(section, option, value)
    return repo


def _fetched(gitdir: Path) -> dict[str, float]:
    try:
        data = json.loads((Path(gitdir) / FETCHED).read_text())
        return {k: float(v) for k, v in data.items()} if isinstance(data, dict) else {}
    except (OSError, ValueError, TypeError):
        return {}


def _record_fetch(gitdir: Path, name: str) -> None:
    data = _fetched(gitdir)
    data[name] = round(time.time())
    try:
        atomic_write_text(Path(gitdir) / FETCHED, json.dumps(data, indent=1, sort_keys=True) + "\n")
    except OSError:
        pass


def _age(seconds: float) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= 2 * size:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds)} seconds"


def _fetch_ref(repo: gitpython.Repo, remote: _Remote, ref: str, progress: Progress, label: str,
               timeout: float) -> str:
    """Fetch one ref (shallow and blob-less where the server allows) into the clone; return its commit."""
    name = _pick_remote_ref(ref, remote.refs)
    if name is not None:
        if name.startswith("refs/tags/"):
            dest = name
        elif name.startswith("refs/heads/"):
            dest = "refs/remotes/origin/" + name[len("refs/heads/"):]
        else:
            dest = "refs/flowscan/" + name.replace("refs/", "", 1)
        refspec = f"+{name}:{dest}"
    elif FULL_HEX.fullmatch(ref):
        dest = f"refs/flowscan/commits/{ref}"
        refspec = f"+{ref}:{dest}"
    else:
        hint = " (give a full commit id)" if HEX.fullmatch(ref or "") else ""
        raise FlowscanError(f"ref '{ref or 'HEAD'}' not found in {remote.shown}{hint}")
    partial = config_bool(repo, "flowscan", "partial")
    shallow = config_bool(repo, "flowscan", "shallow")
    args = [*http_limits(timeout), "fetch", "--no-tags", "--no-write-fetch-head", "--progress"]
    if partial:
        args.append("--filter=blob:none")
    if shallow:
        args.append("--depth=1")
    else:
        progress.message(f"{remote.shown} serves no shallow fetches: fetching the full history")
    try:
        run_network(repo.git, [*args, "--", "origin", refspec], timeout=timeout, what=f"cannot fetch {label}",
                    on_line=ForwardProgress(progress, label).new_message_handler())
    except GitFailed as exc:
        if name is None:
            raise FlowscanError(f"ref '{ref}' not found in {remote.shown}") from None
        raise FlowscanError(f"cannot fetch {label}: {exc.message}") from None
    finally:
        progress.finish()
    try:
        commit = _peel(repo, dest)
    except GitFailed:
        raise FlowscanError(f"ref '{ref}' in {remote.shown} does not name a commit") from None
    if name is not None and not name.startswith("refs/tags/"):
        # branches and HEAD move: remember the commit so that this exact commit is found offline later
        run(repo.git, ["update-ref", f"refs/flowscan/commits/{commit}", commit])
    _record_fetch(Path(repo.git_dir), dest)
    return commit


def _label(repo: str, ref: str) -> str:
    tail = re.split(r"[/:]", repo.rstrip("/"))[-1] or repo
    if tail.endswith(".git"):
        tail = tail[:-4]
    return f"{tail}@{ref or 'HEAD'}"


def _check_ref_known(remote: _Remote, ref: str) -> None:
    if _pick_remote_ref(ref, remote.refs) is None and not FULL_HEX.fullmatch(ref):
        hint = " (give a full commit id)" if HEX.fullmatch(ref) else ""
        raise FlowscanError(f"ref '{ref or 'HEAD'}' not found in {remote.shown}{hint}")


def _recheck_tag(repo: gitpython.Repo, cached: _Cached, url: str, shown: str, ref: str, local: bool,
                 progress: Progress, label: str, timeout: float) -> str:
    """The commit of a tag already in the clone, re-fetched when the remote moved the tag since."""
    fetched = _fetched(Path(repo.git_dir)).get(cached.name)
    when = f"fetched {_age(time.time() - fetched)} ago" if fetched else "fetched earlier"
    stale = f"using the cached {label} = {cached.commit[:12]} ({when})"
    try:
        remote = _ls_remote(url, shown, ref, local, min(timeout, RECHECK_TIMEOUT))
    except FlowscanError as exc:
        progress.warn(f"{exc}; {stale}")
        return cached.commit
    name = _pick_remote_ref(ref, remote.refs)
    if name != cached.name:
        progress.warn(f"tag '{ref}' is no longer in {shown}; {stale}")
        return cached.commit
    if remote.refs[name] == cached.oid:
        return cached.commit
    progress.warn(f"tag '{ref}' moved in {shown} (it was {cached.commit[:12]}, {when}): fetching it again")
    return _fetch_ref(repo, remote, ref, progress, label, timeout)


def open_tree(source: Source, cache_dir: Path, progress: Progress = NULL,
              network_timeout: float | None = None) -> Tree:
    """Open a source: a plain directory as is, a git repository at a ref through a cache clone.
    `network_timeout`: seconds a remote may stay silent (flowscan.toml's; the environment overrides it)."""
    if source.src:
        if source.repo or source.ref:
            raise FlowscanError(f"{source.role or 'source'}: a directory (src) excludes repo and ref")
        return DirTree(Path(source.src), progress)
    if not source.repo:
        if source.ref:
            raise FlowscanError(f"{source.role or 'source'}: ref '{show(source.ref)}' given without a repository")
        raise FlowscanError(f"{source.role or 'source'}: no repository or directory given")
    timeout = timeout_setting(network_timeout)
    repo = validate_repo(source.repo)
    ref = validate_ref(source.ref) if source.ref else ""
    local = local_transport(repo)
    url = _normalize_repo(repo)
    if is_local_path(repo) and not Path(url).is_dir():
        raise FlowscanError(f"not a git repository: {repo}")
    where = _Where(clone_dir(cache_dir, repo), url, repo, ref, local, _label(url, ref), timeout)
    with locked(where.lock):
        _sweep_aside(where.target)
        got = None
        if where.target.is_dir():
            try:
                got = _use_existing(where, progress)
            except _Damaged as exc:
                got = _replace_damaged(where, progress, exc.reason)
        if got is None:
            got = _clone_fresh(where, progress)
        hold(where.target)  # (taken under the clone's lock: gc removes a clone under both)
    clone, commit = got
    return GitTree(clone, commit, where.label, where.lock, progress, timeout,
                   reclone=lambda reason, ino: _reclone(where, progress, reason, ino, commit))


def use_stamp(target: Path) -> Path:
    """Held shared by every process reading the clone; its mtime is the clone's last use (for gc)."""
    return Path(target).with_suffix(".use")


_HELD: dict[str, int] = {}


def hold(target: Path) -> None:
    """Mark the clone in use by this process until it exits (gc passes it by) and touch its stamp."""
    stamp = use_stamp(target)
    fd = _HELD.get(str(stamp))
    if fd is None:
        fd = os.open(stamp, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o666)
        fcntl.flock(fd, fcntl.LOCK_SH)
        _HELD[str(stamp)] = fd
    try:
        os.utime(fd)
    except OSError:
        pass


@dataclass(frozen=True)
class _Where:
    """A cache clone and what it is a clone of (enough to make it again)."""
    target: Path
    url: str
    shown: str
    ref: str
    local: bool
    label: str
    timeout: float

    @property
    def lock(self) -> Path:
        return self.target.with_suffix(".lock")


class _Damaged(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


ASIDE = ".damaged-"  # a damaged clone is renamed to repos/.damaged-<name>-<random> and then removed


def _sweep_aside(target: Path) -> None:
    """Remove what killed runs left beside the clone (the caller holds the clone's lock)."""
    if not target.parent.is_dir():
        return
    for pattern in (f".tmp-{target.name}-*", f"{ASIDE}{target.name}-*"):
        for stale in target.parent.glob(pattern):
            shutil.rmtree(stale, ignore_errors=True)


def _use_existing(where: _Where, progress: Progress) -> tuple[gitpython.Repo, str]:
    """The clone already in the cache at the ref (fetched into it when new); _Damaged when the clone's own
    files fail to read and git's check confirms it (the caller holds the lock)."""
    try:
        clone = repo_at(where.target)
    except FlowscanError:
        raise _Damaged("not a git repository any more") from None
    try:
        cached = _local_ref(clone, where.ref)
        if cached is not None and cached.name.startswith("refs/tags/"):
            commit = _recheck_tag(clone, cached, where.url, where.shown, where.ref, where.local, progress,
                                  where.label, where.timeout)
        elif cached is not None:
            commit = cached.commit
        else:
            remote = _ls_remote(where.url, where.shown, where.ref, where.local, where.timeout)
            _check_ref_known(remote, where.ref)
            progress.message(f"fetching {where.label}")
            commit = _fetch_ref(clone, remote, where.ref, progress, where.label, where.timeout)
        return clone, commit
    except GitFailed as exc:  # a local read of the clone failed
        clone.close()
        problem = clone_problem(where.target)
        if problem or names_damage(exc.message):
            raise _Damaged(problem or exc.message) from None
        raise FlowscanError(f"cannot read the cache clone of {where.label}: {exc.message}") from None
    except FlowscanError:  # a fetch failed: the network, or the clone it fetches into
        clone.close()
        problem = clone_problem(where.target)
        if problem:
            raise _Damaged(problem) from None
        raise


def _discard(target: Path) -> None:
    """Move a damaged clone aside (one rename: no process sees half of it) and remove it; only ever the
    cache's own directory (the caller holds its lock)."""
    aside = Path(tempfile.mkdtemp(prefix=f"{ASIDE}{target.name}-", dir=target.parent))
    os.rename(target, aside / "clone")
    shutil.rmtree(aside, ignore_errors=True)


def _replace_damaged(where: _Where, progress: Progress, reason: str) -> tuple[gitpython.Repo, str]:
    """Discard the damaged clone and make it again from the remote (the caller holds the lock)."""
    _discard(where.target)
    return _clone_again(where, progress, reason)


def _reclone(where: _Where, progress: Progress, reason: str, opened_ino: int,
             commit: str) -> gitpython.Repo:
    """For a tree whose reads failed on a clone found damaged: the clone made again (or the one another
    process already made since), at the same commit."""
    with locked(where.lock):
        try:
            now = os.stat(where.target).st_ino
        except OSError:
            now = -1
        if now == opened_ino or now < 0:
            if now >= 0:
                _discard(where.target)
            clone, again = _clone_again(where, progress, reason)
        else:  # another process replaced it meanwhile
            clone = repo_at(where.target)
            cached = _local_ref(clone, where.ref) if where.ref and not FULL_HEX.fullmatch(where.ref) else None
            again = cached.commit if cached is not None else commit
    if again != commit:
        clone.close()
        raise FlowscanError(f"the cache clone of {where.label} was damaged ({reason}) and cloned again, but "
                            f"{where.ref or 'HEAD'} is now {again[:12]}, not {commit[:12]}: ask again")
    return clone


def _clone_again(where: _Where, progress: Progress, reason: str) -> tuple[gitpython.Repo, str]:
    """The clone made again after its damaged one was discarded; one line says so (or, when the remote
    cannot be reached either, one error says both)."""
    progress.message(f"the cache clone of {where.label} is damaged ({reason}): cloning it again")
    try:
        got = _clone_fresh(where, progress)
    except FlowscanError as exc:
        raise FlowscanError(f"the cache clone of {where.label} was damaged ({reason}) and is discarded; "
                            f"cloning it again failed: {exc}") from None
    progress.warn(f"the cache clone of {where.label} was damaged ({reason}): discarded it and cloned it again")
    return got


def _clone_fresh(where: _Where, progress: Progress) -> tuple[gitpython.Repo, str]:
    """A new cache clone at the ref, made under a temporary name and renamed into place (the caller holds
    the lock)."""
    remote = _ls_remote(where.url, where.shown, where.ref, where.local, where.timeout)  # fail before cloning
    _check_ref_known(remote, where.ref)
    target = where.target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    try:
        how = ", ".join(w for w, on in (("shallow", remote.shallow), ("blob-less", remote.partial)) if on)
        progress.message(f"cloning {where.label} ({how or 'full: the server offers no filter or depth'}) "
                         f"into {target}")
        made = _init_clone(tmp, remote)
        try:
            commit = _fetch_ref(made, remote, where.ref, progress, where.label, where.timeout)
        finally:
            made.close()
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return repo_at(target), commit


def cached_repos(cache_dir: Path) -> list[dict]:
    """The cache clones: directory, remote URL, tags and commits held (for `flowscan sources`)."""
    out = []
    base = repos_dir(cache_dir)
    if not base.is_dir():
        return out
    for gitdir in sorted(base.glob("*.git")):
        try:
            repo = repo_at(gitdir)
        except FlowscanError:
            continue
        try:
            url = run(repo.git, ["config", "remote.origin.url"]).decode("utf-8", "replace").strip()
            refs = run(repo.git, ["for-each-ref", "--format=%(refname)"]).decode("utf-8", "replace").split()
        except GitFailed:
            continue
        finally:
            repo.close()
        size = sum(f.stat().st_size for f in gitdir.rglob("*") if f.is_file())
        out.append({"path": str(gitdir), "url": url, "bytes": size,
                    "tags": sorted(r[len("refs/tags/"):] for r in refs if r.startswith("refs/tags/")),
                    "commits": sorted(r.rsplit("/", 1)[1] for r in refs
                                      if r.startswith("refs/flowscan/commits/"))})
    return out
