"""trace / diff / baseline / check / render through the CLI, on tagged git repositories built from fixtures."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from tests.helpers import one_line_error, run


@pytest.fixture
def fs(capsys, tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "check-cache"

    def call(*args):
        return run(capsys, "-q", "--cache-dir", str(cache), *args)
    return call


def refs(repos, linux, qemu):
    return ("--guest-repo", str(repos["linux"]), "--guest", linux, "--host-repo", str(repos["linux"]),
            "--host", linux, "--vmm-repo", str(repos["qemu"]), "--vmm", qemu)


def test_trace_at_tags_exit_codes(fs, fixture_repos):
    code, out, _ = fs("trace", *refs(fixture_repos, "v6.12", "v10.0.0"), "--format", "json")
    res = json.loads(out)
    assert code == 0 and res["summary"]["verified"] == 79 and res["summary"]["unverifiable"] == 2
    assert {s["role"]: s["ref"] for s in res["sources"]} == {"guest": "v6.12", "host": "v6.12", "vmm": "v10.0.0"}
    assert all(len(s["commit"]) == 40 for s in res["sources"])
    code, out, _ = fs("trace", *refs(fixture_repos, "v6.1", "v7.2.0"))
    assert code == 1
    assert out.rstrip().splitlines()[-1] == (
        "81 hops: 75 verified, 3 missing, 2 unverifiable, 1 skipped-optional -> FAIL (3 required hops missing)")


def test_trace_markdown_report(fs, fixture_repos, tmp_path):
    out_file = tmp_path / "r.md"
    code, _, _ = fs("trace", *refs(fixture_repos, "v6.1", "v7.2.0"), "--format", "md", "-o", str(out_file))
    text = out_file.read_text()
    assert code == 1 and "kvm_psci_system_reset2" in text and "missing" in text
    assert "kvm_psci_system_reset (similar name)" in text


def test_baseline_then_check(fs, fixture_repos, tmp_path):
    base = tmp_path / "baseline.json"
    code, _, err = fs("baseline", "arm64-reboot", *refs(fixture_repos, "v6.1", "v7.2.0"), "-o", str(base))
    assert code == 0 and "baseline written" in err
    first = base.read_text()
    fs("baseline", "arm64-reboot", *refs(fixture_repos, "v6.1", "v7.2.0"), "-o", str(base))
    assert base.read_text() == first  # deterministic, reviewable

    code, _, _ = fs("check", "--baseline", str(base), *refs(fixture_repos, "v6.1", "v7.2.0"))
    assert code == 0  # same refs: no drift

    md, junit, sarif = tmp_path / "d.md", tmp_path / "j.xml", tmp_path / "s.sarif"
    code, out, _ = fs("check", "--baseline", str(base), *refs(fixture_repos, "v6.12", "v10.0.0"),
                      "--markdown", str(md), "--junit", str(junit), "--sarif", str(sarif))
    assert code == 1 and "renamed" in out
    assert "kvm_hvc_call_handler -> kvm_smccc_call_handler" in md.read_text()
    suite = ET.parse(junit).getroot()
    hop_cases = [c for c in suite.findall(".//testcase") if not c.get("classname").endswith(".drift")]
    assert len(hop_cases) == 81  # one per hop; neighbourhood drift has a suite of its own
    failed = {c.get("name") for c in hop_cases if c.find("failure") is not None}
    assert "handle_hvc->kvm_smccc_call_handler" in failed  # renamed callee: drift attached to its hop
    log = json.loads(sarif.read_text())
    assert log["version"] == "2.1.0"
    rules = {r["ruleId"] for r in log["runs"][0]["results"]}
    assert {"renamed", "moved", "registration-api-changed", "signature-changed", "path-changed"} <= rules

    # only info-level drift fails nothing with --fail-on broken
    code, _, _ = fs("check", "--baseline", str(base), *refs(fixture_repos, "v6.12", "v10.0.0"), "--fail-on", "broken")
    assert code == 0


def test_check_bad_baseline(fs, fixture_repos, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    code, _, err = fs("check", "--baseline", str(bad), *refs(fixture_repos, "v6.12", "v10.0.0"))
    assert code == 2 and "not a flowscan result" in one_line_error(err)
    code, _, err = fs("check", "--baseline", str(tmp_path / "none.json"))
    assert code == 2 and "no such baseline file" in one_line_error(err)


def test_diff_saved_results_and_render(fs, fixture_repos, tmp_path):
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    fs("trace", *refs(fixture_repos, "v6.1", "v7.2.0"), "--format", "json", "-o", str(old))
    fs("trace", *refs(fixture_repos, "v6.12", "v10.0.0"), "--format", "json", "-o", str(new))
    diff_json = tmp_path / "diff.json"
    code, _, _ = fs("diff", str(old), str(new), "--format", "json", "-o", str(diff_json))
    assert code == 1
    data = json.loads(diff_json.read_text())
    assert ("moved", "softmmu/runstate.c -> system/runstate.c") in {(i["kind"], i["subject"]) for i in data["items"]}
    dot = tmp_path / "drift.dot"
    code, _, _ = fs("render", str(diff_json), "-o", str(dot))
    assert code == 0 and "digraph" in dot.read_text() and "kvm_smccc_call_handler" in dot.read_text()


def test_diff_by_refs(fs, fixture_repos):
    code, out, _ = fs("diff", "arm64-reboot", "--from", "guest=v6.1,host=v6.1,vmm=v7.2.0",
                      "--to", "guest=v6.12,host=v6.12,vmm=v10.0.0", "--guest-repo", str(fixture_repos["linux"]),
                      "--host-repo", str(fixture_repos["linux"]), "--vmm-repo", str(fixture_repos["qemu"]))
    assert code == 1 and "kvm_hvc_call_handler -> kvm_smccc_call_handler" in out
    code, _, err = fs("diff", "arm64-reboot", "--from", "guest=v6.1,cpu=x", "--to", "guest=v6.12")
    assert code == 2 and "unknown role 'cpu'" in one_line_error(err)


def test_bad_refs_are_refused_before_git(fs, fixture_repos):
    for ref, msg in (("--upload-pack=touch", "ref"), ("v1..v2", "ref"), ("a b", "ref")):
        code, _, err = fs("trace", "--guest-repo", str(fixture_repos["linux"]), f"--guest={ref}",
                          "--vmm-repo", str(fixture_repos["qemu"]), "--vmm", "v10.0.0")
        assert code == 2 and msg in one_line_error(err)
    code, _, err = fs("trace", "--guest-repo", str(fixture_repos["linux"]), "--guest", "v9.9",
                      "--vmm-repo", str(fixture_repos["qemu"]), "--vmm", "v10.0.0")
    assert code == 2 and "v9.9" in one_line_error(err)


def test_failed_render_leaves_no_file(fs, tmp_path, monkeypatch, fixture_repos):
    """A missing `dot` fails with one line and leaves neither a half-written nor an empty output file."""
    import flowscan.report.painter as painter
    monkeypatch.setattr(painter, "dot_available", lambda: False)
    out = tmp_path / "flow.svg"
    code, _, err = fs("trace", *refs(fixture_repos, "v6.12", "v10.0.0"), "--render", str(out))
    assert code == 2 and "graphviz" in one_line_error(err).lower()
    assert not out.exists() and list(tmp_path.iterdir()) == []
    code, _, _ = fs("trace", *refs(fixture_repos, "v6.12", "v10.0.0"), "--render", str(tmp_path / "flow.dot"))
    assert code == 0 and (tmp_path / "flow.dot").read_text().startswith("digraph")
    assert oct((tmp_path / "flow.dot").stat().st_mode & 0o777) != "0o600"
