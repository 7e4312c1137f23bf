"""`flowscan sources` as text: what is configured, and what the cache holds (workspace.inventory)."""

from __future__ import annotations


def inventory_text(data: dict) -> str:
    lines = [f"config: {data['config'] or '(none: ./flowscan.toml not found)'}",
             f"flow: {data['flow'] or '(default arm64-reboot)'}"]
    for r, s in data["sources"].items():
        where = s["src"] or f"{s['repo'] or '(upstream default)'} @ {s['ref'] or '?'}"
        lines.append(f"  {r}: {where}" + (f"  scope={','.join(s['scope'])}" if s["scope"] else ""))
    lines.append(f"cache: {data['cache_dir']}")
    fc = data["facts_cache"]
    lines.append(f"  facts: {fc.get('entries', 0)} entries, {fc.get('bytes', 0) / 1e6:.1f} MB")
    for t in data["indexes"]["trees"]:
        lines.append(f"  index: {t['tree']}" + (f" ({t['scopes']})" if t["scopes"] else " (whole tree)")
                     + f", {t['files']} files, {t['bytes'] / 1e6:.1f} MB")
    for repo in data["repos"]:
        refs = [*repo.get("tags", []), *(c[:12] for c in repo.get("commits", []))]
        lines.append(f"  repo: {repo.get('url', '?')} ({repo.get('bytes', 0) / 1e6:.1f} MB) refs: "
                     f"{', '.join(refs) or '-'}")
    for label, st in sorted(data["scans"].items()):
        rate = st["reused"] / st["files"] if st.get("files") else 0.0
        how = "from its index" if st.get("indexed") else (f"{st['parsed']} parsed, {st['reused']} reused "
                                                           f"(hit rate {rate:.0%})")
        lines.append(f"  last scan of {label}: {st['files']} files, {how}, {st['seconds']} s")
    return "\n".join(lines) + "\n"
