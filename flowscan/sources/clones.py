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

Listing uses ``git ls-tree -r`` (never ``-l``: in a partial clone that fetches every blob one by one to
learn its size; sizes come from ``cat-file --batch-check`` once the blobs are here). Reading goes through
one long-lived ``git cat-file --batch`` process; no worktree is ever checked out.

Refs and URLs from users are validated before they reach git, and every git call runs with
``GIT_ALLOW_PROTOCOL`` restricted to file/git/http(s)/ssh as a second fence.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path


from flowscan.errors import FlowscanError
from flowscan.sources.git import GitFailed, config_bool, git, locked, progress_flag, say, tty_progress
from flowscan.sources.refs import FULL_HEX, HEX, Source, is_local_path, local_transport, show, validate_ref, validate_repo
from flowscan.sources.trees import DirTree, GitTree, Tree



# What a local "server" (git upload-pack run on a repository on this machine) is told to allow: the blob
# filter and fetching blobs by id. A real remote decides this for itself; git strips GIT_CONFIG_* from the
# environment of local transports, so this goes into remote.origin.uploadpack of the cache clone.
LOCAL_UPLOAD_PACK = ("git -c uploadpack.allowFilter=true -c uploadpack.allowAnySHA1InWant=true "
                      "-c pack.window=0 upload-pack")


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


def _ls_remote(url: str, shown: str, ref: str, local: bool) -> _Remote:
    """Ask the remote about ``ref``; the packet trace also tells what the server can do.

    Protocol v2 servers list their fetch features ("fetch=shallow wait-for-done filter"), v0 servers
    append capabilities to the first ref; a dumb HTTP server lists nothing and gets neither a filter nor a
    depth (asking a dumb server for a filter leaves a promisor clone that recurses into lazy fetches).
    """
    args = ["ls-remote"]
    if local:
        args.append(f"--upload-pack={LOCAL_UPLOAD_PACK}")
    args += ["--", url, ref or "HEAD"]
    try:
        out, err = git(args, trace=True)
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


def _local_ref(gitdir: Path, ref: str) -> str | None:
    """The commit for an immutable ref (tag or commit id) already in the clone, without any fetch."""
    if not ref:
        return None
    names = []
    if ref.startswith("refs/tags/"):
        names.append(ref)
    elif not ref.startswith("refs/"):
        names.append(f"refs/tags/{ref}")
    try:
        out = git(["for-each-ref", "--format=%(refname) %(objectname)", "refs/tags/", "refs/flowscan/commits/"],
                   cwd=gitdir).decode()
    except GitFailed:
        return None
    have = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    for name in names:
        if name in have:
            return _peel(gitdir, name)
    if HEX.fullmatch(ref):
        hits = [n for n in have if n.startswith("refs/flowscan/commits/" + ref)]
        if len(hits) == 1:
            return hits[0].rsplit("/", 1)[1]
    return None


def _peel(gitdir: Path, name: str) -> str:
    return git(["rev-parse", "--verify", "-q", f"{name}^{{commit}}"], cwd=gitdir).decode().strip()


def _init_clone(tmp: Path, remote: _Remote) -> None:
    git(["init", "-q", "--bare", str(tmp)])
    settings = [("remote.origin.url", remote.url),
                ("gc.auto", "0"),  # no background gc racing other flowscan processes
                ("fetch.writeCommitGraph", "false"),
                ("flowscan.partial", str(remote.partial).lower()),
                ("flowscan.shallow", str(remote.shallow).lower())]
    if remote.partial:
        settings += [("remote.origin.promisor", "true"),
                     ("remote.origin.partialclonefilter", "blob:none"),
                     ("core.repositoryformatversion", "1"),
                     ("extensions.partialClone", "origin")]
    if remote.local:
        settings.append(("remote.origin.uploadpack", LOCAL_UPLOAD_PACK))
    for key, value in settings:
        git(["config", key, value], cwd=tmp)


def _fetch_ref(gitdir: Path, remote: _Remote, ref: str, progress: bool, label: str) -> str:
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
    partial = config_bool(gitdir, "flowscan.partial")
    shallow = config_bool(gitdir, "flowscan.shallow")
    args = ["fetch", "--no-tags", "--no-write-fetch-head", *progress_flag(progress)]
    if partial:
        args.append("--filter=blob:none")
    if shallow:
        args.append("--depth=1")
    elif progress:
        say(progress, f"{remote.shown} serves no shallow fetches: fetching the full history")
    try:
        git([*args, "origin", refspec], cwd=gitdir, show_progress=tty_progress(progress))
    except GitFailed as exc:
        if name is None:
            raise FlowscanError(f"ref '{ref}' not found in {remote.shown}") from None
        raise FlowscanError(f"cannot fetch {label}: {exc.message}") from None
    try:
        commit = _peel(gitdir, dest)
    except GitFailed:
        raise FlowscanError(f"ref '{ref}' in {remote.shown} does not name a commit") from None
    if name is not None and not name.startswith("refs/tags/"):
        # branches and HEAD move: remember the commit so that this exact commit is found offline later
        git(["update-ref", f"refs/flowscan/commits/{commit}", commit], cwd=gitdir)
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


def open_tree(source: Source, cache_dir: Path, progress: bool = True) -> Tree:
    """Open a source: a plain directory as is, a git repository at a ref through a cache clone."""
    if source.src:
        if source.repo or source.ref:
            raise FlowscanError(f"{source.role or 'source'}: a directory (src) excludes repo and ref")
        return DirTree(Path(source.src))
    if not source.repo:
        if source.ref:
            raise FlowscanError(f"{source.role or 'source'}: ref '{show(source.ref)}' given without a repository")
        raise FlowscanError(f"{source.role or 'source'}: no repository or directory given")
    repo = validate_repo(source.repo)
    ref = validate_ref(source.ref) if source.ref else ""
    local = local_transport(repo)
    url = _normalize_repo(repo)
    if is_local_path(repo) and not Path(url).is_dir():
        raise FlowscanError(f"not a git repository: {repo}")
    label = _label(url, ref)
    target = clone_dir(cache_dir, repo)
    lock = target.with_suffix(".lock")

    with locked(lock):
        if target.is_dir():
            commit = _local_ref(target, ref)
            if commit is None:
                remote = _ls_remote(url, repo, ref, local)
                _check_ref_known(remote, ref)
                say(progress, f"fetching {label}")
                commit = _fetch_ref(target, remote, ref, progress, label)
        else:
            remote = _ls_remote(url, repo, ref, local)  # unknown ref, unreachable URL: fail before cloning
            _check_ref_known(remote, ref)
            target.parent.mkdir(parents=True, exist_ok=True)
            for stale in target.parent.glob(f".tmp-{target.name}-*"):  # left by a killed run (we hold the lock)
                shutil.rmtree(stale, ignore_errors=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o777 & ~umask)
            try:
                how = ", ".join(w for w, on in (("shallow", remote.shallow), ("blob-less", remote.partial)) if on)
                say(progress, f"cloning {label} ({how or 'full: the server offers no filter or depth'}) "
                               f"into {target}")
                _init_clone(tmp, remote)
                commit = _fetch_ref(tmp, remote, ref, progress, label)
                os.rename(tmp, target)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
    return GitTree(target, commit, label, lock, progress)


def cached_repos(cache_dir: Path) -> list[dict]:
    """The cache clones: directory, remote URL, tags and commits held (for `flowscan sources`)."""
    out = []
    base = repos_dir(cache_dir)
    if not base.is_dir():
        return out
    for gitdir in sorted(base.glob("*.git")):
        try:
            url = git(["config", "remote.origin.url"], cwd=gitdir).decode().strip()
            refs = git(["for-each-ref", "--format=%(refname)"], cwd=gitdir).decode().split()
        except GitFailed:
            continue
        size = sum(f.stat().st_size for f in gitdir.rglob("*") if f.is_file())
        out.append({"path": str(gitdir), "url": url, "bytes": size,
                    "tags": sorted(r[len("refs/tags/"):] for r in refs if r.startswith("refs/tags/")),
                    "commits": sorted(r.rsplit("/", 1)[1] for r in refs
                                      if r.startswith("refs/flowscan/commits/"))})
    return out
