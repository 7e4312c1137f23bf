"""The formatter table drives every command's outputs; global options after the command; the report
package keeps graphviz to the painter."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from flowscan.cli import check, diff, trace
from flowscan.report import formats
from flowscan.report.diagram import flow_diagram, node_id
from tests.helpers import one_line_error, run

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"


def _choices(cmd, name="fmt") -> list[str]:
    return list(next(p for p in cmd.params if p.name == name).type.choices)


def test_format_choices_come_from_the_table():
    assert _choices(trace) == ["text", "json", "md", "junit", "table"]  # no drift: no SARIF, no annotations
    assert _choices(diff) == list(formats.WRITERS) == ["text", "json", "md", "junit", "sarif", "github"]
    opts = {p.opts[0] for p in check.params if p.name and p.name.startswith("out_")}
    assert opts == {"--markdown", "--junit", "--sarif"}


def test_diff_of_saved_results_in_every_format(capsys, tmp_path):
    old, new = str(DATA / "arm64-reboot-old.json"), str(DATA / "arm64-reboot.json")
    outs = {}
    for name in formats.WRITERS:
        code, out, err = run(capsys, "diff", old, new, "--format", name)
        assert (code, err) == (1, ""), name
        outs[name] = out
    assert outs["text"].startswith("drift arm64-reboot: ")
    assert outs["md"].startswith("## flowscan drift: `arm64-reboot`")
    assert json.loads(outs["sarif"])["version"] == "2.1.0"
    assert ET.fromstring(outs["junit"].split("\n", 1)[1]).tag == "testsuites"
    assert outs["github"].startswith("::error ")
    saved = tmp_path / "d.json"
    saved.write_text(outs["json"])
    code, _, _ = run(capsys, "render", str(saved), "-o", str(tmp_path / "d.dot"))  # a saved diff draws
    assert code == 0 and (tmp_path / "d.dot").read_text().startswith("digraph")


def test_trace_rejects_a_format_that_needs_drift(capsys):
    code, _, err = run(capsys, "trace", "--format", "sarif")
    assert code == 2 and "'sarif' is not one of" in one_line_error(err)


def test_global_options_after_the_command(capsys, tmp_path):
    cache = tmp_path / "c"
    code, out, err = run(capsys, "trace", "--format", "json", "--cache-dir", str(cache), "-q", "-j", "1")
    assert (code, err) == (0, "")  # -q: no progress
    assert (cache / "scans.json").is_file()
    assert run(capsys, "-q", "--cache-dir", str(cache), "-j", "1", "trace", "--format", "json") == (0, out, "")
    code, out, _ = run(capsys, "sources", "--cache-dir", str(cache), "--format", "json")
    data = json.loads(out)
    assert data["cache_dir"] == str(cache) and len(data["scans"]) == 3
    cfg = tmp_path / "flowscan.toml"
    cfg.write_text('flow = "x86-reboot"\n')
    code, out, _ = run(capsys, "--config", "/nonexistent.toml", "sources", "--config", str(cfg))  # last wins
    assert code == 0 and "flow: x86-reboot" in out
    code, _, err = run(capsys, "sources", "-j", "999")
    assert code == 2 and "999" in one_line_error(err)


def test_no_graphviz_outside_the_painter():
    """A Markdown report, the formatter table and the diagram model load without graphviz."""
    code = ("import sys; import flowscan.report.formats, flowscan.report.diagram, flowscan.report.html, "
            "flowscan.cli; print('graphviz' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_diagram_model_of_a_flow(sample):
    d = flow_diagram(sample)
    assert [s.id for s in d.model.stages] == [s.id for s in sample.stages]
    n = d.model.nodes[node_id("vmm", "kvm_arm_gicv3_reset")]
    assert n.role == "vmm" and "kvm_arm_gicv3_class_init:hold" in n.target_of
    handoff = next(n for n in d.model.nodes.values() if n.kind == "handoff" and n.name == "kvm-exit:SYSTEM_EVENT_RESET")
    assert handoff.text == ["KVM_EXIT_SYSTEM_EVENT", "KVM_SYSTEM_EVENT_RESET"]
    assert d.title == "arm64 guest reboot under KVM and QEMU (arm64-reboot)"
