"""Regenerate the sample results in tests/data/ (not run by the tests; they read the JSON files).

    python tests/data/make_samples.py

1. Runs the real pipeline (extract -> graph -> verify) with queries/flows/arm64-reboot.toml over the fixture
   trees: linux v6.1 / v6.12 (guest and host) and qemu v7.2.0 (vmm).
2. `arm64-reboot-old.json`: linux v6.1 + qemu v7.2.0, as verified.
3. `arm64-reboot.json`: linux v6.12 + qemu v7.2.0, then edited so that one sample exercises every case the
   renderers handle: QEMU's softmmu/ renamed to system/ (as QEMU 8.1 did; the vmm ref is labelled v8.1.0),
   `kvm_arm_reset_vcpu -> write_kvmstate_to_list` made missing (with candidates) and
   `qemu_system_reset -> cpu_synchronize_all_states` made an optional hop that was not found.
   Sources get repository URLs, illustrative commit ids and URL templates.
4. `arm64-reboot-drift.json`: flowscan.drift.diff_results(old, new): renamed (one of them broken), signature
   changed, moved files, newly verified hops, calls added/removed next to the flow.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from flowscan.flow.drift import diff_results
from flowscan.extract.parse import extract_file
from flowscan.graph.callgraph import Graph
from flowscan.flow.results import DriftReport, FlowResult, SourceInfo
from flowscan.flow.spec import load_flow
from flowscan.flow.verify import verify

HERE = Path(__file__).resolve().parent
LINUX_URL = "https://git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux.git"
LINUX_TMPL = LINUX_URL + "/tree/{path}?h={ref}#n{line}"
QEMU_URL = "https://gitlab.com/qemu-project/qemu.git"
QEMU_TMPL = "https://gitlab.com/qemu-project/qemu/-/blob/{ref}/{path}#L{line}"
COMMITS = {"v6.1": "830b3c68c1fb1e9176028d02ef86f3cf76aa2476", "v6.12": "adc218676eef25575469234709c2d87185ca223a",
           "v7.2.0": "b67b00e6b4c7831a3f5bc684bc0df7a9bfd1bd56", "v8.1.0": "6f8e9f1a34f6b2cd3fe1a8ab2f2c4f2e0a5c7b31"}


def _graph(spec, root: Path, role: str) -> Graph:
    facts = [extract_file(p.read_bytes(), str(p.relative_to(root))) for p in sorted(root.rglob("*.[ch]"))]
    return Graph(facts, prefer=spec.prefer.get(role, ()))


def _sources(linux: str, qemu: str) -> list[SourceInfo]:
    return [SourceInfo("guest", LINUX_URL, linux, COMMITS[linux], url_template=LINUX_TMPL),
            SourceInfo("host", LINUX_URL, linux, COMMITS[linux], url_template=LINUX_TMPL),
            SourceInfo("vmm", QEMU_URL, qemu, COMMITS[qemu], url_template=QEMU_TMPL)]


def run(linux: str, qemu: str) -> FlowResult:
    spec = load_flow(ROOT / "queries" / "flows" / "arm64-reboot.toml")
    lroot, qroot = ROOT / "fixtures" / "linux" / linux, ROOT / "fixtures" / "qemu" / "v7.2.0"
    graphs = {"guest": _graph(spec, lroot, "guest"), "host": _graph(spec, lroot, "host"),
              "vmm": _graph(spec, qroot, "vmm")}
    return verify(spec, graphs, _sources(linux, qemu))


def _hop(result: FlowResult, hop_id: str):
    return next(h for h in result.hops if h.id == hop_id)


def edit_new(new: FlowResult) -> FlowResult:
    data = json.loads(new.dumps().replace('"softmmu/', '"system/'))
    new = FlowResult.from_json(data)
    h = _hop(new, "kvm_arm_reset_vcpu->write_kvmstate_to_list")
    h.status, h.steps, h.evidence, h.matched_to, h.resolution = "missing", [], [], "", ""
    h.to_path, h.to_line, h.signature, h.conditions = "", 0, "", []
    h.note = "write_kvmstate_to_list not called from kvm_arm_reset_vcpu"
    h.candidates = ["write_list_to_kvmstate (called by kvm_arm_reset_vcpu now: likely rename)",
                    "kvm_arm_sync_mpstate_to_kvm (similar name)"]
    h = _hop(new, "qemu_system_reset->cpu_synchronize_all_states")
    h.status, h.optional, h.steps, h.evidence, h.matched_to, h.resolution = "skipped-optional", True, [], [], "", ""
    h.to_path, h.to_line, h.signature = "", 0, ""
    h.note = "cpu_synchronize_all_states not called from qemu_system_reset"
    h.candidates = ["cpu_synchronize_all_post_reset (similar name)"]
    return new


def drift(old: FlowResult, new: FlowResult) -> DriftReport:
    return diff_results(old, new)


def main() -> None:
    old = run("v6.1", "v7.2.0")
    new = edit_new(run("v6.12", "v8.1.0"))
    (HERE / "arm64-reboot-old.json").write_text(old.dumps())
    (HERE / "arm64-reboot.json").write_text(new.dumps())
    (HERE / "arm64-reboot-drift.json").write_text(drift(old, new).dumps())
    print(f"old {old.summary()}\nnew {new.summary()}")


if __name__ == "__main__":
    main()
