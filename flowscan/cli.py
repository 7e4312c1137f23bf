"""The flowscan command line: a thin layer of click commands over workspace, verify, drift and report.

Exit status: 0 success; 1 a negative answer (a flow with missing hops, drift found, no path); 2 a usage or
input error, always one line on stderr and never a traceback.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Sequence

import click

from flowscan import __version__
from flowscan.config import ROLES
from flowscan.errors import FlowscanError
from flowscan.report import formats

FORMATS = click.Choice(["text", "json"])
DEFAULT_PREFER = ("arch/arm64", "target/arm")


# -- shared options --------------------------------------------------------------------------------
class Ctx:
    """The global options, given before the command or after it (the last one given wins); the config
    file is read when first needed, once every option is known."""

    def __init__(self, config_path: str | None, cache_dir: str | None, jobs: int, quiet: bool):
        self.config_path, self.cache_dir_opt, self.jobs, self.quiet = config_path, cache_dir, jobs, quiet
        self._config = None
        self._progress = None

    @property
    def config(self):
        if self._config is None:
            from flowscan.config import load_config

            self._config = load_config(Path(self.config_path) if self.config_path else None)
        return self._config

    @property
    def cache_dir(self) -> Path:
        from flowscan.config import default_cache_dir

        return Path(self.cache_dir_opt) if self.cache_dir_opt else (self.config.cache_dir or default_cache_dir())

    @property
    def progress(self):
        if self._progress is None:
            from flowscan.console import ClickProgress

            self._progress = ClickProgress(self.quiet)
        return self._progress

    @property
    def network_timeout(self):
        return self.config.network_timeout


# The global options: on the group, and again on every command (see _global_options_after_commands).
_GLOBAL_OPTIONS = (
    (("--config", "config_path"), dict(type=click.Path(dir_okay=False),
                                       help="flowscan.toml to use (default: ./flowscan.toml when present).")),
    (("--cache-dir", "cache_dir"), dict(type=click.Path(file_okay=False),
                                        help="Where clones and the facts cache live (default: $XDG_CACHE_HOME/flowscan).")),
    (("--jobs", "-j", "jobs"), dict(type=click.IntRange(0, 256), help="Parser processes (0 = all cores).")),
    (("--quiet", "-q", "quiet"), dict(is_flag=True, default=None, help="No progress on stderr.")),
)
_CTX_FIELD = {"config_path": "config_path", "cache_dir": "cache_dir_opt", "jobs": "jobs", "quiet": "quiet"}


def tree_options(fn):
    @click.option("--src", type=click.Path(file_okay=False), help="A source tree on disk (paths are shown relative to it).")
    @click.option("--repo", help="A git URL or local repository to clone (with --ref).")
    @click.option("--ref", help="Tag, branch or commit of --repo.")
    @click.option("--scope", "scopes", multiple=True, help="Subdirectory, file or glob to scan (repeatable; default: the whole tree).")
    @click.option("--prefer", multiple=True, help="Prefer definitions under this path when a name has several (default: arch/arm64, target/arm).")
    @click.option("--build-config", "build", metavar="NAME", default="", help="Build configuration (linux-arm64-defconfig, qemu-aarch64-softmmu-kvm): files it does not build never supply a definition; #if conditions are evaluated (default: none).")
    @click.option("--config-file", "config_file", type=click.Path(dir_okay=False), help="A .config (Linux), config-host.mak/config-devices.mak or KEY=y file (QEMU) for the build configuration (implies one).")
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        build, cfile = kwargs.pop("build"), kwargs.pop("config_file")
        if cfile and not Path(cfile).is_file():
            raise FlowscanError(f"no such configuration file: {cfile}")
        if build:
            from flowscan.buildconfig.load import profile

            profile(build)  # an unknown name: one line, before any work
        BUILD.update(build=build, config_file=Path(cfile) if cfile else None)
        return fn(*args, **kwargs)
    return wrapper


# The build configuration of the current query command (set by tree_options, read by _graph and _ask).
BUILD: dict = {"build": "", "config_file": None}


def _source(src, repo, ref):
    from flowscan.sources.refs import Source

    if src and (repo or ref):
        raise FlowscanError("give either --src DIR or --repo URL --ref REF, not both")
    if not src and not repo:
        raise FlowscanError("no tree given: use --src DIR, or --repo URL_OR_PATH --ref REF")
    if repo and not ref:
        raise FlowscanError("--repo needs --ref (a tag, branch or commit)")
    if src and not Path(src).is_dir():
        raise FlowscanError(f"no such directory: {src}")
    return Source(role="", repo=repo or "", ref=ref or "", src=src or "")


def _graph(ctx: Ctx, src, repo, ref, scopes, prefer):
    from flowscan.workspace import load

    loaded = load(_source(src, repo, ref), scopes, cache_dir=ctx.cache_dir, jobs=ctx.jobs, progress=ctx.progress,
                  prefer=prefer or DEFAULT_PREFER, network_timeout=ctx.network_timeout, **BUILD)
    return loaded.graph


def _ask(ctx: Ctx, src, repo, ref, scopes, prefer, whole, seeds, question):
    """Answer `question(graph)` warm from the index, or cold from the files the question needs."""
    from flowscan.workspace import ask

    return ask(_source(src, repo, ref), scopes, question, seeds, cache_dir=ctx.cache_dir, jobs=ctx.jobs,
               progress=ctx.progress, prefer=prefer or DEFAULT_PREFER, whole=whole,
               network_timeout=ctx.network_timeout, **BUILD)


def question_options(fn):
    @click.option("--whole", is_flag=True, help="Index the whole tree (or scope) first instead of reading only "
                                                "the files the question needs (slower once, then every question "
                                                "on it is instant).")
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, **kwargs)
    return wrapper


def _known(graph, name: str) -> list:
    found = graph.definitions(name)
    if not found and graph.partial:  # no file spells the name: it is defined nowhere
        raise FlowscanError(f"function '{name}' is not defined in the scanned tree (from the files that spell it; "
                            "with --whole, similar names are listed)")
    if not found:
        import difflib

        near = difflib.get_close_matches(name, sorted(graph.def_names()), n=3, cutoff=0.75)
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        raise FlowscanError(f"function '{name}' is not defined in the scanned tree{hint}")
    return found


# -- group -----------------------------------------------------------------------------------------
def _global_options(fn):
    for decls, attrs in reversed(_GLOBAL_OPTIONS):
        fn = click.option(*decls, **attrs)(fn)
    return fn


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="flowscan")
@_global_options
@click.pass_context
def cli(cctx, config_path, cache_dir, jobs, quiet):
    """Verify call flows across guest Linux, host KVM and QEMU, from source, and flag drift between releases.

    The global options (--config, --cache-dir, -j, -q) go before or after the command."""
    cctx.obj = Ctx(config_path, cache_dir, jobs or 0, bool(quiet))


# -- query commands --------------------------------------------------------------------------------
@cli.command()
@click.argument("name")
@tree_options
@question_options
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
@click.pass_obj
def defs(ctx, name, src, repo, ref, scopes, prefer, whole, fmt):
    """Where NAME is defined: every definition, with its #if conditions."""
    from flowscan.report import answers

    click.echo(_ask(ctx, src, repo, ref, scopes, prefer, whole, [name],
                    lambda graph: answers.defs(name, _known(graph, name), fmt, graph)), nl=False)


@cli.command()
@click.argument("func")
@tree_options
@question_options
@click.option("--direct-only", is_flag=True, help="Only what the compiler emits as direct calls: direct, through "
              "macros, and from the bodies of __always_inline callees (no resolved indirect calls).")
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
@click.pass_obj
def callees(ctx, func, src, repo, ref, scopes, prefer, whole, direct_only, fmt):
    """What FUNC calls, each call with file:line and how it was resolved."""
    from flowscan.report import answers

    def question(graph):
        out = []
        for d in graph.preferred(graph.built(_known(graph, func))):
            out.extend(graph.callees(d, direct_only, inline=True))
        return answers.edges(out, fmt, "callee")

    click.echo(_ask(ctx, src, repo, ref, scopes, prefer, whole, [func], question), nl=False)


@cli.command()
@click.argument("func")
@tree_options
@question_options
@click.option("--direct-only", is_flag=True, help="Only direct calls (no resolved indirect calls).")
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
@click.pass_obj
def callers(ctx, func, src, repo, ref, scopes, prefer, whole, direct_only, fmt):
    """Who calls FUNC, directly or through resolved function pointers."""
    from flowscan.report import answers

    def question(graph):
        _known(graph, func)
        return answers.edges(graph.callers(func, direct_only), fmt, "caller")

    click.echo(_ask(ctx, src, repo, ref, scopes, prefer, whole, [func], question), nl=False)


@cli.command("index")
@tree_options
@click.pass_obj
def index_cmd(ctx, src, repo, ref, scopes, prefer):
    """Index a tree (or scope) at a ref: every later question on it is answered from the index."""
    from flowscan.workspace import load

    loaded = load(_source(src, repo, ref), scopes, cache_dir=ctx.cache_dir, jobs=ctx.jobs, progress=ctx.progress,
                  prefer=prefer or DEFAULT_PREFER, network_timeout=ctx.network_timeout)
    st = loaded.stats
    how = "already indexed" if st.indexed else f"{st.parsed} parsed, {st.reused} from the facts cache" + (
        f", {st.kept} as they were" if st.kept else "")
    click.echo(f"{loaded.tree.label}: {st.files} files ({how}, {st.skipped} skipped) in {st.seconds:.1f} s")


@cli.command()
@click.argument("src_func", metavar="FROM")
@click.argument("dst_func", metavar="TO")
@tree_options
@question_options
@click.option("--max-depth", type=click.IntRange(1, 50), default=12, show_default=True)
@click.option("--direct-only", is_flag=True, help="Only direct calls (no resolved indirect calls).")
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
@click.pass_obj
def path(ctx, src_func, dst_func, src, repo, ref, scopes, prefer, whole, max_depth, direct_only, fmt):
    """A shortest call path FROM -> TO, each edge with its file:line and how it was resolved."""
    from flowscan.report import answers

    def question(graph):
        _known(graph, src_func)
        found = graph.route(src_func, dst_func, max_depth=max_depth, direct_only=direct_only)
        return None if found is None else (answers.path(found, fmt), graph.route_cut)

    text, cut = _ask(ctx, src, repo, ref, scopes, prefer, whole, [src_func, dst_func], question) or (None, 0)
    if cut:
        from flowscan.graph.callgraph import narrowing_note

        ctx.progress.warn(f"{narrowing_note(cut)} (ask on the --scope that holds the route)")
    if text is None:
        click.echo(f"no call path from {src_func} to {dst_func} within {max_depth} calls"
                   + (" (direct calls only)" if direct_only else ""), err=True)
        sys.exit(1)
    click.echo(text, nl=False)


@cli.command()
@click.option("--api", "apis", multiple=True, help="Only this registration API (repeatable).")
@tree_options
@question_options
@click.option("--format", "fmt", type=click.Choice(["text", "json", "csv"]), default="text", show_default=True)
@click.pass_obj
def registrations(ctx, apis, src, repo, ref, scopes, prefer, whole, fmt):
    """Every registration call site: API, file:line, class_init, QOM type, callbacks, parent storage (every
    API: the whole index; named ones: from the files that call them)."""
    from flowscan.extract.apis import default_registry
    from flowscan.report import answers

    known = set(default_registry().api_names())
    for api in apis:
        if api not in known:
            raise FlowscanError(f"unknown registration API '{api}' (known: {', '.join(sorted(known))})")
    if not apis:
        graph = _graph(ctx, src, repo, ref, scopes, prefer)
        click.echo(answers.registrations(graph, graph.registrations, fmt), nl=False)
        return
    click.echo(_ask(ctx, src, repo, ref, scopes, prefer, whole, list(apis),
                    lambda graph: answers.registrations(graph, graph.ix.regs_by_api(apis), fmt)), nl=False)


@cli.command()
@click.argument("names", nargs=-1)
@tree_options
@question_options
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
@click.pass_obj
def types(ctx, names, src, repo, ref, scopes, prefer, whole, fmt):
    """The QOM type hierarchy: each type's ancestors and its reset phases as resolved (every type: the
    whole index; named ones: from the files they need)."""
    from flowscan.report import answers

    def question(graph):
        wanted = list(names) or sorted(graph.qom.types)
        for n in names:
            if graph.qom.find(n) is None:
                raise FlowscanError(f"QOM type '{n}' not found (give a type name, e.g. kvm-arm-gicv3, or its macro)")
        return answers.types(graph, [graph.qom.find(n).name for n in wanted], fmt)

    click.echo(_ask(ctx, src, repo, ref, scopes, prefer, whole or not names, list(names), question), nl=False)


# -- sources ---------------------------------------------------------------------------------------
def role_options(fn):
    for role in reversed(ROLES):  # click lists options in the reverse order of decoration
        fn = click.option(f"--{role}-src", f"{role}_src", type=click.Path(file_okay=False),
                          help=f"A {role} checkout on disk instead of a clone.")(fn)
        fn = click.option(f"--{role}-repo", f"{role}_repo", help=f"Git URL or path of the {role} repository.")(fn)
        fn = click.option(f"--{role}", f"{role}_ref", help=f"Ref (tag, branch, commit) of the {role} tree.")(fn)
    fn = click.option("--config-file", "config_files", multiple=True, metavar="ROLE=PATH",
                      help="The build configuration's values for a role: a .config (guest/host Linux), a "
                           "config-host.mak/config-devices.mak or KEY=y file (vmm QEMU); repeatable. "
                           "Default: what the flow spec names (arm64 defconfig, aarch64-softmmu with KVM).")(fn)
    return fn


def _config_files(kw: dict) -> dict[str, Path]:
    from flowscan.config import ROLES

    out: dict[str, Path] = {}
    for item in kw.get("config_files") or ():
        role, sep, path = item.partition("=")
        if not sep or not path:
            raise FlowscanError(f"--config-file {item}: expected ROLE=PATH (ROLE one of {', '.join(ROLES)})")
        if role not in ROLES:
            raise FlowscanError(f"--config-file {item}: unknown role '{role}' (expected one of {', '.join(ROLES)})")
        if not Path(path).is_file():
            raise FlowscanError(f"--config-file {item}: no such file: {path}")
        out[role] = Path(path)
    return out


def _sources(ctx: Ctx, roles: Sequence[str], kw: dict, demo_ok: bool = True) -> dict:
    """Per role: command line, then flowscan.toml, then (no refs anywhere) the bundled fixtures."""
    from flowscan.config import DEFAULT_REPOS, merge_cli
    from flowscan.sources.refs import Source
    from flowscan.workspace import demo_source

    given = {}
    for role in roles:
        sc = merge_cli(ctx.config, role, repo=kw.get(f"{role}_repo"), ref=kw.get(f"{role}_ref"),
                       src=kw.get(f"{role}_src"))
        if sc.src or sc.ref:
            given[role] = sc
    if not given:
        if not demo_ok:
            raise FlowscanError("no sources: give refs (--guest/--host/--vmm) or configure flowscan.toml")
        return {role: demo_source(role) for role in roles}
    # guest and host are both Linux: one given stands for the other
    if "guest" in roles and "guest" not in given and "host" in given:
        given["guest"] = given["host"]
    if "host" in roles and "host" not in given and "guest" in given:
        given["host"] = given["guest"]
    out = {}
    for role in roles:
        sc = given.get(role)
        if sc is None:
            raise FlowscanError(f"no source for role '{role}': give --{role} REF (with --{role}-repo) or --{role}-src DIR")
        if sc.src:
            if not Path(sc.src).is_dir():
                raise FlowscanError(f"no such directory: {sc.src}")
            out[role] = Source(role=role, src=str(sc.src))
        else:
            out[role] = Source(role=role, repo=sc.repo or DEFAULT_REPOS[role], ref=sc.ref)
    return out


def _url_templates(ctx: Ctx) -> dict[str, str]:
    return {r: s.url_template for r, s in ctx.config.sources.items() if getattr(s, "url_template", "")}


@cli.command()
@role_options
@click.pass_obj
def fetch(ctx, **kw):
    """Clone or update the configured trees at their refs into the cache."""
    from flowscan.sources.clones import open_tree

    given = [r for r in ROLES if kw.get(f"{r}_ref") or kw.get(f"{r}_src") or r in ctx.config.sources]
    sources = _sources(ctx, given or ROLES, kw, demo_ok=False)
    done = set()
    for role, src in sources.items():
        if (src.repo, src.ref, src.src) in done:
            continue
        done.add((src.repo, src.ref, src.src))
        tree = open_tree(src, ctx.cache_dir, progress=ctx.progress, network_timeout=ctx.network_timeout)
        click.echo(f"{role}: {tree.label} {tree.commit[:12]}".rstrip())
        tree.close()


@cli.command()
@click.option("--format", "fmt", type=FORMATS, default="text", show_default=True)
@click.pass_obj
def sources(ctx, fmt):
    """What is configured (flowscan.toml) and what is in the cache."""
    import json

    from flowscan.report.inventory import inventory_text
    from flowscan.workspace import inventory

    data = inventory(ctx.config, ctx.cache_dir)
    click.echo(json.dumps(data, indent=2, sort_keys=True) + "\n" if fmt == "json" else inventory_text(data), nl=False)


@cli.command()
@click.option("--dry-run", is_flag=True, help="List what would be removed, remove nothing.")
@click.option("--older-than", "days", type=click.FloatRange(0, 1e6), default=30, show_default=True, metavar="DAYS",
              help="Remove what was last used more than DAYS ago.")
@click.option("--keep-clones", is_flag=True, help="Keep every clone (and the facts their refs reach).")
@click.pass_obj
def gc(ctx, dry_run, days, keep_clones):
    """Remove the clones, indexes, facts entries and checkouts' stat caches that nothing used lately (and
    the stat caches of checkouts that are gone; never one another process holds); the next question
    rebuilds what it needs."""
    import time

    from flowscan.index.gc import collect

    now = time.time()
    report = collect(ctx.cache_dir, days, dry_run=dry_run, keep_clones=keep_clones, now=now)
    click.echo(report.text(ctx.cache_dir, now), nl=False)


# -- flows -----------------------------------------------------------------------------------------
@cli.command()
@click.option("--flow-file", "flow_files", multiple=True, type=click.Path(dir_okay=False), help="Also list this user spec.")
@click.pass_obj
def flows(ctx, flow_files):
    """The built-in flow specs (and user specs given with --flow-file)."""
    from flowscan.flow.spec import builtin_flows, load_flow

    for name, p in builtin_flows().items():
        spec = load_flow(p)
        click.echo(f"{name}  (built-in, {len(spec.hops)} hops in {len(spec.stages)} stages)  {spec.title}")
    for f in flow_files:
        spec = load_flow(Path(f))
        click.echo(f"{spec.name}  ({f}, {len(spec.hops)} hops in {len(spec.stages)} stages)  {spec.title}")


def _spec(ctx: Ctx, flow: str | None, flow_file: str | None):
    from flowscan.flow.spec import find_flow, load_flow

    if flow_file:
        if not Path(flow_file).is_file():
            raise FlowscanError(f"no such flow file: {flow_file}")
        return load_flow(Path(flow_file))
    return load_flow(find_flow(flow or ctx.config.flow or "arm64-reboot"))


def _trace(ctx: Ctx, spec, sources, config_files: dict | None = None):
    from flowscan.flow.verify import verify
    from flowscan.workspace import load_roles

    loaded = load_roles(spec, sources, cache_dir=ctx.cache_dir, jobs=ctx.jobs, progress=ctx.progress,
                        url_templates=_url_templates(ctx), network_timeout=ctx.network_timeout,
                        config_files=config_files)
    graphs = {r: l.graph for r, l in loaded.items()}
    return verify(spec, graphs, [l.info for l in loaded.values()]), loaded


def _refuse_inputs(outputs: list[Path], inputs: list) -> None:
    """An output must not overwrite what the command reads (`--sarif` onto the baseline), nor another
    output."""
    seen: list[Path] = []
    for out in outputs:
        for other in [*(Path(i) for i in inputs if i), *seen]:
            if other.exists() and out.exists() and os.path.samefile(out, other) or \
                    os.path.realpath(out) == os.path.realpath(other):
                what = "another output" if other in seen else "an input"
                raise FlowscanError(f"output {out} is {what} of this command ({other}): refusing to overwrite it")
        seen.append(out)


def _write(path: str | None, text: str) -> None:
    if path is None or path == "-":
        click.echo(text, nl=False)
        return
    from flowscan.fileio import atomic_write_text

    atomic_write_text(Path(path), text)


@cli.command()
@click.argument("flow", required=False)
@role_options
@click.option("--flow-file", type=click.Path(dir_okay=False), help="A user's flow spec (TOML) instead of a built-in.")
@click.option("--format", "fmt", type=click.Choice(formats.names(drift=False) + list(formats.ALIASES)),
              default="text", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write the result here instead of stdout.")
@click.option("--render", "render_to", type=click.Path(dir_okay=False), help="Also draw the flow (.svg .png .pdf .dot .html).")
@click.option("--collapse", is_flag=True, help="In the diagram, fold chains of intermediate calls.")
@click.pass_obj
def trace(ctx, flow, flow_file, fmt, output, render_to, collapse, **kw):
    """Verify FLOW (default arm64-reboot) hop by hop against guest/host/vmm trees.

    With no refs and no flowscan.toml, runs on the bundled miniature trees."""
    _refuse_inputs([Path(p) for p in (output, render_to) if p and p != "-"], [flow_file, ctx.config.path])
    spec = _spec(ctx, flow, flow_file)
    result, _loaded = _trace(ctx, spec, _sources(ctx, spec.roles(), kw), _config_files(kw))
    text = formats.render(fmt, formats.Outcome(result))
    if render_to:
        _render(result, None, None, Path(render_to), collapse)
    _write(output, text)
    sys.exit(0 if result.ok else 1)


def _render(result, drift, old, out: Path, collapse: bool) -> None:
    from flowscan.fileio import atomic_write_text
    from flowscan.report import html, painter

    graph = painter.drift_graph(drift, result, old, collapse=collapse) if drift else \
        painter.flow_graph(result, collapse=collapse)
    if out.suffix == ".html":
        atomic_write_text(out, html.html_page(result, painter.svg_text(graph), drift))
    else:
        painter.write(graph, out)


@cli.command(name="render")
@click.argument("result_file", type=click.Path(dir_okay=False))
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="FILE.svg|.png|.pdf|.dot|.html")
@click.option("--collapse", is_flag=True, help="Fold chains of intermediate calls.")
@click.pass_obj
def render_cmd(ctx, result_file, output, collapse):
    """Draw a saved trace result (or a diff result) as DOT, SVG, PNG, PDF or one HTML page."""
    from flowscan.flow.saved import load_result_file

    _refuse_inputs([Path(output)], [result_file])
    result, drift, old = load_result_file(Path(result_file))
    _render(result, drift, old, Path(output), collapse)


# -- drift -----------------------------------------------------------------------------------------
def _parse_refs(text: str | None, option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    if not text:
        return out
    for part in text.split(","):
        if "=" not in part:
            raise FlowscanError(f"{option}: expected role=REF[,role=REF...], got '{part}'")
        role, ref = (p.strip() for p in part.split("=", 1))
        if role not in ROLES:
            raise FlowscanError(f"{option}: unknown role '{role}' ({', '.join(ROLES)})")
        out[role] = ref
    return out


@cli.command()
@click.argument("flow", required=False)
@click.argument("results", nargs=-1)
@click.option("--from", "from_refs", help="Old refs: guest=REF,host=REF,vmm=REF")
@click.option("--to", "to_refs", help="New refs: guest=REF,host=REF,vmm=REF")
@role_options
@click.option("--flow-file", type=click.Path(dir_okay=False), help="A user's flow spec (TOML).")
@click.option("--format", "fmt", type=click.Choice(formats.names(drift=True)), default="text", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False))
@click.option("--render", "render_to", type=click.Path(dir_okay=False), help="Also draw the drift (.svg .png .pdf .dot .html).")
@click.option("--collapse", is_flag=True)
@click.pass_obj
def diff(ctx, flow, results, from_refs, to_refs, flow_file, fmt, output, render_to, collapse, **kw):
    """Drift of FLOW between two sets of refs (--from/--to), or between two saved JSON results."""
    from flowscan.flow.drift import diff_results

    if flow and flow.endswith(".json"):
        results = (flow, *results)
        flow = None
    _refuse_inputs([Path(p) for p in (output, render_to) if p and p != "-"], [*results, flow_file, ctx.config.path])
    if results:
        if len(results) != 2:
            raise FlowscanError("give two saved results: flowscan diff OLD.json NEW.json")
        from flowscan.flow.saved import load_result_file

        old, _, _ = load_result_file(Path(results[0]))
        new, _, _ = load_result_file(Path(results[1]))
        drift = diff_results(old, new)
    else:
        if not from_refs or not to_refs:
            raise FlowscanError("give --from role=REF,... and --to role=REF,... (or two saved results)")
        spec = _spec(ctx, flow, flow_file)
        old, new, drift = _diff_refs(ctx, spec, from_refs, to_refs, kw)
    text = formats.render(fmt, formats.Outcome(new, drift, old))
    if render_to:
        _render(new, drift, old, Path(render_to), collapse)
    _write(output, text)
    sys.exit(1 if drift.items else 0)


def _diff_refs(ctx: Ctx, spec, from_refs: str, to_refs: str, kw: dict):
    from flowscan.flow.drift import diff_results

    roles = spec.roles()
    old_kw = dict(kw)
    new_kw = dict(kw)
    for role, ref in _parse_refs(from_refs, "--from").items():
        old_kw[f"{role}_ref"] = ref
    for role, ref in _parse_refs(to_refs, "--to").items():
        new_kw[f"{role}_ref"] = ref
    files = _config_files(kw)
    old, _ = _trace(ctx, spec, _sources(ctx, roles, old_kw, demo_ok=False), files)
    new, _ = _trace(ctx, spec, _sources(ctx, roles, new_kw, demo_ok=False), files)
    return old, new, diff_results(old, new)


@cli.command()
@click.argument("flow", required=False)
@role_options
@click.option("--flow-file", type=click.Path(dir_okay=False))
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="Baseline file to write (JSON).")
@click.pass_obj
def baseline(ctx, flow, flow_file, output, **kw):
    """Write the verified flow as a baseline file to commit (deterministic JSON)."""
    from flowscan.flow.results import VERIFIED

    spec = _spec(ctx, flow, flow_file)
    result, _ = _trace(ctx, spec, _sources(ctx, spec.roles(), kw), _config_files(kw))
    _write(output, result.dumps())
    click.echo(f"baseline written: {output} ({result.summary()[VERIFIED]} of {len(result.hops)} hops verified)",
               err=True)


def _check_outputs(fn):
    """`check --OPTION FILE` for every format of the formatter table that names a check option; the command
    gets them as `outputs` (format name -> file)."""
    rows = [(name, w) for name, w in formats.WRITERS.items() if w.check_option]
    for name, w in reversed(rows):
        fn = click.option(f"--{w.check_option}", f"out_{name}", type=click.Path(dir_okay=False),
                          help=f"Write {w.help} here.")(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        kwargs["outputs"] = {name: kwargs.pop(f"out_{name}") for name, _w in rows if kwargs.get(f"out_{name}")}
        kwargs = {k: v for k, v in kwargs.items() if not k.startswith("out_")}
        return fn(*args, **kwargs)
    return wrapper


@cli.command()
@click.argument("flow", required=False)
@click.option("--baseline", "baseline_file", required=True, type=click.Path(dir_okay=False), help="The committed baseline (flowscan baseline -o FILE).")
@role_options
@click.option("--flow-file", type=click.Path(dir_okay=False))
@click.option("--fail-on", type=click.Choice(["broken", "changed", "any"]), default="changed", show_default=True)
@_check_outputs
@click.pass_obj
def check(ctx, flow, baseline_file, flow_file, fail_on, outputs, **kw):
    """CI gate: compare the current refs with a committed baseline. Exit 0 no drift, 1 drift, 2 error."""
    from flowscan.flow.drift import diff_results, fails
    from flowscan.flow.saved import load_result_file

    if not Path(baseline_file).is_file():
        raise FlowscanError(f"no such baseline file: {baseline_file} (write one with `flowscan baseline -o FILE`)")
    _refuse_inputs([Path(p) for p in outputs.values() if p not in (None, "-")],
                   [baseline_file, flow_file, ctx.config.path])
    old, _, _ = load_result_file(Path(baseline_file))
    spec = _spec(ctx, flow or old.flow, flow_file)
    new, _ = _trace(ctx, spec, _sources(ctx, spec.roles(), kw), _config_files(kw))
    outcome = formats.Outcome(new, diff_results(old, new), old)
    from flowscan.fileio import write_all

    files = [(Path(path), formats.render(name, outcome).encode("utf-8")) for name, path in outputs.items()
             if path not in (None, "-")]
    write_all(files)  # all or none
    for name, path in outputs.items():
        if path == "-":
            _write(path, formats.render(name, outcome))
    if os.environ.get("GITHUB_ACTIONS") == "true":
        click.echo(formats.render("github", outcome), nl=False)
    click.echo(formats.render("text", outcome), nl=False)
    drift = outcome.drift
    sys.exit(1 if fails(drift, fail_on) else 0)


def _store_global(cctx, param, value) -> None:
    if value is None or (param.is_flag and not value):
        return
    setattr(cctx.find_object(Ctx), _CTX_FIELD[param.name], value)


def _global_options_after_commands() -> None:
    """Every command takes the global options too, where people type them: `flowscan trace ... -q`."""
    for cmd in cli.commands.values():
        for decls, attrs in _GLOBAL_OPTIONS:
            cmd.params.append(click.Option(decls, expose_value=False, callback=_store_global, **attrs))


_global_options_after_commands()


class _Stopped(BaseException):
    """A signal asked us to stop (not KeyboardInterrupt, which click would catch and print around)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


_STOP_SIGNALS = {"SIGINT": "interrupted", "SIGTERM": "terminated", "SIGHUP": "hung up"}


def _on_signal(signum, _frame) -> None:
    raise _Stopped(signum)


def _catch_signals() -> dict:
    """Ctrl-C, SIGTERM and SIGHUP unwind the stack (work directories removed, workers stopped), then exit
    128+signal with one line. Returns the previous handlers."""
    import signal

    old = {}
    for name in _STOP_SIGNALS:
        sig = getattr(signal, name, None)
        if sig is not None and signal.getsignal(sig) in (signal.default_int_handler, signal.SIG_DFL):
            try:
                old[sig] = signal.signal(sig, _on_signal)
            except ValueError:  # not the main thread
                break
    return old


_CONTROL = None


def escape_controls(text: str) -> str:
    """Control characters (a name or file name may carry ESC, CR, BEL) shown as \\xNN: printed raw they
    would drive the terminal or forge lines. Newlines and tabs stay."""
    global _CONTROL
    if _CONTROL is None:
        import re

        _CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class _EscapingStream:
    """stdout with control characters escaped (JSON escapes its own: nothing there changes)."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        return self._stream.write(escape_controls(text) if isinstance(text, str) else text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def main() -> None:
    import signal

    old = _catch_signals()
    stdout = sys.stdout
    sys.stdout = _EscapingStream(stdout)
    try:
        _main()
    finally:
        sys.stdout = stdout
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _main(retry: bool = True) -> None:
    import sqlite3

    try:
        cli.main(standalone_mode=False, prog_name="flowscan")
    except sqlite3.DatabaseError as exc:  # an index damaged in a way its seal did not show
        from flowscan.workspace import discard_damaged

        if retry and discard_damaged():
            click.echo(f"flowscan: warning: an index was damaged ({exc}): rebuilt it and asking again", err=True)
            return _main(retry=False)
        click.echo(f"flowscan: error: cache database error: {exc} (remove the cache's index directory)", err=True)
        sys.exit(2)
    except _Stopped as exc:
        import signal

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a second one must not cut this short
            signal.signal(sig, signal.SIG_IGN)
        name = signal.Signals(exc.signum).name
        try:
            click.echo(f"flowscan: {_STOP_SIGNALS.get(name, 'stopped')}", err=True)
        except OSError:  # the terminal is gone (SIGHUP)
            pass
        sys.exit(128 + exc.signum)
    except FlowscanError as exc:
        click.echo(escape_controls(f"flowscan: error: {exc}".replace("\n", " ")), err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("flowscan: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"flowscan: error: {exc.format_message()}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("flowscan: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except OSError as exc:
        click.echo(f"flowscan: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), err=True)
        sys.exit(2)
