"""Results saved by an older flowscan: version-1 files (facts only in evidence text) load as version 2."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from flowscan.flow.results import SCHEMA_VERSION, DriftReport, FlowResult
from flowscan.flow.saved import load_result_file
from flowscan.flow.upgrade import upgrade
from flowscan.report import text as text_report
from flowscan.report import markdown as md_report
from flowscan.report.hops import evidence_text
from tests.helpers import one_line_error, run

DATA = Path(__file__).resolve().parent / "data"
V1 = DATA / "v1"  # tests/data/*.json as make_samples.py wrote them under schema version 1


def _v1(name: str) -> dict:
    data = json.loads((V1 / name).read_text())
    assert data["schema_version"] == 1
    return data


def _without(ev, *names):
    return dataclasses.replace(ev, **{n: type(getattr(ev, n))() for n in names})


def test_v1_trace_result_converts_to_the_v2_one(sample):
    """The same run saved under both versions: every fact v1 wrote into prose comes back as a field.
    Version 1 did not record a consumer's switch expression or a call's fan-out, so those stay empty."""
    old, _, _ = load_result_file(V1 / "arm64-reboot.json")
    assert old.schema_version == SCHEMA_VERSION
    assert [h.id for h in old.hops] == [h.id for h in sample.hops]
    for a, b in zip(old.hops, sample.hops):
        assert (a.constants, a.flag, a.field, a.api) == (b.constants, b.flag, b.field, b.api), a.id
        assert [_without(e, "target", "fanout") if e.side == "consumer" or e.what == "call" else e
                for e in a.evidence] == \
            [_without(e, "target", "fanout") if e.side == "consumer" or e.what == "call" else e
             for e in b.evidence], a.id
        assert [evidence_text(e) for e in a.evidence] == [evidence_text(e) for e in b.evidence]
    hops = {h.id: h for h in old.hops}
    assert hops["kvm-exit:SYSTEM_EVENT_RESET"].constants == ["KVM_EXIT_SYSTEM_EVENT", "KVM_SYSTEM_EVENT_RESET"]
    assert hops["flag:reset_requested"].flag == "reset_requested"
    reg = hops["kvm_arm_gicv3_class_init:hold"]
    assert (reg.api, reg.field) == ("device_class_set_parent_reset", "reset")
    ev = reg.evidence[0]
    assert (ev.what, ev.function, ev.callee, ev.api, ev.field, ev.path, ev.line) == (
        "registration", "kvm_arm_gicv3_class_init", "kvm_arm_gicv3_reset", "device_class_set_parent_reset",
        "reset", "hw/intc/arm_gicv3_kvm.c", 113)
    efi = next(e for h in old.hops if h.kind == "unverifiable" for e in h.evidence)
    assert (efi.what, efi.callee, efi.how) == ("unresolved", "efi.reset_system", "field")
    # what people read is the same from either file
    assert md_report.trace_markdown(old) == md_report.trace_markdown(sample)
    assert text_report.trace_table(old) == text_report.trace_table(sample)


def test_v1_drift_converts(drift_sample):
    drift = DriftReport.from_json(upgrade(_v1("arm64-reboot-drift.json")))
    assert len(drift.items) == len(drift_sample.items)
    assert md_report.drift_markdown(drift) == md_report.drift_markdown(drift_sample)
    assert text_report.drift_text(drift) == text_report.drift_text(drift_sample)
    moved = next(it for it in drift.items if it.kind == "moved")
    assert moved.old.what == "file" and moved.new.what == "file"
    sig = next(it for it in drift.items if it.kind == "signature-changed")
    assert sig.new.what == "definition" and sig.new.signature.startswith("(")


def test_v1_baseline_is_a_valid_input_to_render_and_diff(capsys, tmp_path):
    code, out, err = run(capsys, "diff", str(V1 / "arm64-reboot.json"), str(DATA / "arm64-reboot.json"))
    assert (code, out.splitlines()[-1], err) == (0, "no drift", "")


def test_unknown_schema_version_is_one_line(capsys, tmp_path):
    future = dict(json.loads((DATA / "arm64-reboot.json").read_text()), schema_version=SCHEMA_VERSION + 1)
    f = tmp_path / "future.json"
    f.write_text(json.dumps(future))
    code, _, err = run(capsys, "render", str(f), "-o", str(tmp_path / "x.dot"))
    assert code == 2
    assert one_line_error(err) == (f"flowscan: error: {f}: result schema version {SCHEMA_VERSION + 1} is not "
                                   f"supported (this flowscan reads versions 1, {SCHEMA_VERSION})")
    assert not (tmp_path / "x.dot").exists()


def test_unknown_field_is_malformed(capsys, tmp_path):
    data = json.loads((DATA / "arm64-reboot.json").read_text())
    data["hops"][0]["evidence"][0]["colour"] = "red"
    f = tmp_path / "odd.json"
    f.write_text(json.dumps(data))
    code, _, err = run(capsys, "render", str(f), "-o", str(tmp_path / "x.dot"))
    assert code == 2 and "malformed flowscan result" in one_line_error(err) and "'colour'" in err


def test_round_trip_is_exact(sample):
    assert FlowResult.from_json(json.loads(sample.dumps())) == sample
