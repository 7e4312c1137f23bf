"""flowscan on real Linux and QEMU releases, cloned at their tags like upstream remotes.

The repositories come from ../shared/realtrees/get-real-trees (FLOWSCAN_REALTREES points at its output).
Every expected line below was checked by reading the real files at that tag.
Run with `pytest -m realtrees`; .ci/run sets FLOWSCAN_REQUIRE_REALTREES=1 so that missing trees fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import run

pytestmark = pytest.mark.realtrees

TREES = Path(os.environ.get("FLOWSCAN_REALTREES",
                            Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "flowscan-realtrees" / "git"))
LINUX, QEMU = TREES / "linux", TREES / "qemu"
HERE = Path(__file__).resolve().parent.parent


def _have(repo: Path, tag: str) -> bool:
    return subprocess.run(["git", "-C", str(repo), "rev-parse", "-q", "--verify", f"refs/tags/{tag}"],
                          capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def cache(tmp_path_factory):
    for repo, tag in ((LINUX, "v6.12.8"), (QEMU, "v10.0.13")):
        if not _have(repo, tag):
            if os.environ.get("FLOWSCAN_REQUIRE_REALTREES"):
                pytest.fail(f"real tree {repo}@{tag} missing: run ../shared/realtrees/get-real-trees")
            pytest.skip(f"real trees not built ({repo}@{tag}); run ../shared/realtrees/get-real-trees")
    return tmp_path_factory.mktemp("realcache")


@pytest.fixture
def fs(capsys, cache):
    def call(*args):
        code, out, err = run(capsys, "-q", "--cache-dir", str(cache), *args)
        assert "Traceback" not in err
        return code, out, err
    return call


LINUX_SCOPE = ("--scope", "arch/arm64", "--scope", "kernel", "--scope", "virt", "--scope", "drivers/firmware")
QEMU_SCOPE = ("--scope", "accel", "--scope", "system", "--scope", "hw/core",
              "--scope", "hw/intc", "--scope", "target/arm", "--scope", "include/hw")


def linux(ref):
    return ("--repo", str(LINUX), "--ref", ref)


def qemu(ref):
    return ("--repo", str(QEMU), "--ref", ref)


# -- core queries (issue: callees / callers / defs on Linux v6.12.8 and QEMU v10.0.13) ------------------
def test_callees_machine_restart(fs):
    code, out, _ = fs("callees", "machine_restart", *linux("v6.12.8"), *LINUX_SCOPE)
    assert code == 0
    lines = out.splitlines()
    assert "arch/arm64/kernel/process.c:131: machine_restart -> smp_send_stop (arch/arm64/kernel/smp.c)  [direct]" in lines
    assert ("arch/arm64/kernel/process.c:138: machine_restart -> efi_reboot (drivers/firmware/efi/reboot.c)  [direct]"
            "  [if (efi_enabled(EFI_RUNTIME_SERVICES))]") in lines
    assert "arch/arm64/kernel/process.c:141: machine_restart -> do_kernel_restart (kernel/reboot.c)  [direct]" in lines


def test_callees_reboot_syscall(fs):
    code, out, _ = fs("callees", "reboot", *linux("v6.12.8"), *LINUX_SCOPE)
    assert code == 0
    assert ("kernel/reboot.c:754: reboot -> kernel_restart (kernel/reboot.c)  [direct]  "
            "[case LINUX_REBOOT_CMD_RESTART]") in out.splitlines()


def test_defs_machine_restart_names_arm64_among_others(fs):
    code, out, _ = fs("defs", "machine_restart", *linux("v6.12.8"), "--scope", "arch")
    assert code == 0
    lines = out.splitlines()
    assert "arch/arm64/kernel/process.c:127: void machine_restart(char *cmd)" in lines
    assert len(lines) >= 10 and any(l.startswith("arch/x86/") for l in lines)


def test_callers_qemu_system_reset(fs):
    code, out, _ = fs("callers", "qemu_system_reset", *qemu("v10.0.13"), *QEMU_SCOPE)
    assert code == 0
    assert "system/runstate.c:801: main_loop_should_exit -> qemu_system_reset  [direct]  [if (request)]" in \
        out.splitlines()


# -- indirect resolution (paths through tables, registrations, QOM parents, notifier chains) -------------
def _path(fs, *args):
    code, out, _ = fs("path", *args, "--format", "json")
    assert code == 0, out
    return [(e["caller"], e["callee"], e["kind"], f"{e['path']}:{e['line']}",
             f"{e.get('store_path', '')}:{e.get('store_line', 0)}") for e in json.loads(out)]


def test_path_handle_trap_exceptions_handle_hvc(fs):
    assert _path(fs, "handle_trap_exceptions", "handle_hvc", *linux("v6.12.8"), *LINUX_SCOPE) == [
        ("handle_trap_exceptions", "handle_hvc", "table", "arch/arm64/kvm/handle_exit.c:351",
         "arch/arm64/kvm/handle_exit.c:303")]


def test_path_machine_restart_psci_sys_reset(fs):
    assert _path(fs, "machine_restart", "psci_sys_reset", *linux("v6.12.8"), *LINUX_SCOPE) == [
        ("machine_restart", "do_kernel_restart", "direct", "arch/arm64/kernel/process.c:141", ":0"),
        ("do_kernel_restart", "psci_sys_reset", "notifier", "kernel/reboot.c:235", "drivers/firmware/psci/psci.c:628")]


def test_path_resettable_reset_arm_cpu_reset_hold(fs):
    got = _path(fs, "resettable_reset", "arm_cpu_reset_hold", *qemu("v10.0.13"), *QEMU_SCOPE)
    assert got == [
        ("resettable_reset", "resettable_assert_reset", "direct", "hw/core/resettable.c:45", ":0"),
        ("resettable_assert_reset", "resettable_phase_hold", "direct", "hw/core/resettable.c:58", ":0"),
        ("resettable_phase_hold", "arm_cpu_reset_hold", "registration", "hw/core/resettable.c:162",
         "target/arm/cpu.c:2707")]


def test_path_gicv3_hold_to_parent_hold(fs):
    assert _path(fs, "kvm_arm_gicv3_reset_hold", "arm_gicv3_common_reset_hold", *qemu("v10.0.13"), *QEMU_SCOPE) == [
        ("kvm_arm_gicv3_reset_hold", "arm_gicv3_common_reset_hold", "qom-parent", "hw/intc/arm_gicv3_kvm.c:715",
         "hw/intc/arm_gicv3_common.c:632")]


def _grep(repo: Path, tag: str, needle: str) -> set[str]:
    out = subprocess.run(["git", "-C", str(repo), "grep", "-n", "-F", needle, tag, "--", "*.c"],
                         capture_output=True, text=True).stdout
    sites = set()
    for line in out.splitlines():
        _tag, path, no, text = line.split(":", 3)
        if not text.lstrip().startswith(("void ", "*", "//")) and "#define" not in text:
            sites.add(f"{path}:{no}")
    return sites


@pytest.mark.parametrize("tag,api", [("v10.0.13", "resettable_class_set_parent_phases"),
                                     ("v7.2.0", "device_class_set_parent_reset")])
def test_registrations_match_git_grep_on_the_whole_tree(fs, tag, api):
    code, out, _ = fs("registrations", "--api", api, *qemu(tag), "--format", "json")
    assert code == 0
    rows = json.loads(out)
    assert {f"{r['path']}:{r['line']}" for r in rows} == _grep(QEMU, tag, api + "(")
    by_ci = {r["class_init"]: r for r in rows}
    if api == "resettable_class_set_parent_phases":
        assert (by_ci["arm_cpu_class_init"]["hold"], by_ci["arm_cpu_class_init"]["line"]) == ("arm_cpu_reset_hold", 2707)
        assert by_ci["kvm_arm_gicv3_class_init"]["hold"] == "kvm_arm_gicv3_reset_hold"
        assert by_ci["kvm_arm_gicv3_class_init"]["type"] == "kvm-arm-gicv3"
        assert by_ci["kvm_arm_its_class_init"]["hold"] == "kvm_arm_its_reset_hold"
    else:
        assert by_ci["arm_cpu_class_init"]["reset"] == "arm_cpu_reset"
        assert by_ci["kvm_arm_gicv3_class_init"]["reset"] == "kvm_arm_gicv3_reset"
        assert by_ci["kvm_arm_its_class_init"]["reset"] == "kvm_arm_its_reset"


# -- the flow, across guest, host and QEMU -----------------------------------------------------------------
def _trace(fs, linux_ref, qemu_ref, *extra):
    code, out, _ = fs("trace", *extra, "--guest-repo", str(LINUX), "--guest", linux_ref, "--host-repo", str(LINUX),
                      "--host", linux_ref, "--vmm-repo", str(QEMU), "--vmm", qemu_ref, "--format", "json")
    return code, json.loads(out)


@pytest.mark.parametrize("linux_ref,qemu_ref,smc", [("v6.12.8", "v10.0.13", "verified"),
                                                    ("v6.1.176", "v7.2.0", "skipped-optional"),
                                                    ("v7.2.8", "v10.2.2", "verified")])
def test_trace_arm64_reboot(fs, linux_ref, qemu_ref, smc):
    if not (_have(LINUX, linux_ref) and _have(QEMU, qemu_ref)):
        pytest.skip(f"{linux_ref}/{qemu_ref} not built")
    code, res = _trace(fs, linux_ref, qemu_ref)
    statuses = {h["id"]: h["status"] for h in res["hops"]}
    # efi.reset_system is firmware; on v6.1 KVM does not forward guest SMCs to PSCI (handle_smc only skips
    # the instruction: arch/arm64/kvm/handle_exit.c), so that optional hop is skipped there.
    assert statuses.pop("efi_reboot->efi.reset_system") == "unverifiable"
    assert statuses.pop("qemu_system_reset->mc->reset") == "unverifiable"  # MachineClass.reset: arm virt sets none
    assert statuses.pop("handle_smc->kvm_smccc_call_handler") == smc
    assert set(statuses.values()) == {"verified"}, {k: v for k, v in statuses.items() if v != "verified"}
    assert code == 0
    hops = {h["id"]: h for h in res["hops"]}
    assert hops["kvm_cpu_exec->qemu_system_reset_request"]["conditions"][-2:] == [
        "case KVM_EXIT_SYSTEM_EVENT", "case KVM_SYSTEM_EVENT_RESET"]


def test_trace_evidence_v612_v1000(fs):
    _code, res = _trace(fs, "v6.12.8", "v10.0.13")
    hops = {h["id"]: h for h in res["hops"]}
    ev = lambda hid: (hops[hid]["evidence"][0]["path"], hops[hid]["evidence"][0]["line"])  # noqa: E731
    assert ev("handle_hvc->kvm_smccc_call_handler") == ("arch/arm64/kvm/handle_exit.c", 53)
    assert ev("kvm_psci_1_x_call->kvm_psci_system_reset2") == ("arch/arm64/kvm/psci.c", 386)
    assert ev("kvm_cpu_exec->qemu_system_reset_request") == ("accel/kvm/kvm-all.c", 3248)
    assert ev("main_loop_should_exit->qemu_system_reset") == ("system/runstate.c", 801)
    assert ev("arm_cpu_class_init:hold") == ("target/arm/cpu.c", 2707)
    assert hops["kvm_arm_gicv3_reset_hold->arm_gicv3_common_reset_hold"]["resolution"] == "qom-parent"
    # the call a default reboot takes (reboot_mode = REBOOT_COLD): the else branch at psci.c:320, SYSTEM_RESET
    # (this asserted the SYSTEM_RESET2 branch at :318 before every call site was listed)
    assert hops["psci_sys_reset->__invoke_psci_fn_hvc"]["conditions"] == [
        "if (!((reboot_mode == REBOOT_WARM || reboot_mode == REBOOT_SOFT) && psci_system_reset2_supported))"]


def test_user_flow_guest_shutdown(fs):
    code, res = _trace(fs, "v6.12.8", "v10.0.13", "--flow-file", str(HERE / "docs" / "examples" / "arm64-shutdown.toml"))
    assert code == 0 and {h["status"] for h in res["hops"]} == {"verified"}
    hops = {h["id"]: h for h in res["hops"]}
    assert hops["kvm_cpu_exec->qemu_system_shutdown_request"]["evidence"][0]["line"] == 3244


# -- drift between releases ---------------------------------------------------------------------------------
def _diff(fs, old_l, old_q, new_l, new_q):
    code, out, _ = fs("diff", "arm64-reboot", "--from", f"guest={old_l},host={old_l},vmm={old_q}",
                      "--to", f"guest={new_l},host={new_l},vmm={new_q}", "--guest-repo", str(LINUX),
                      "--host-repo", str(LINUX), "--vmm-repo", str(QEMU), "--format", "json")
    return code, json.loads(out)


def test_diff_linux_61_to_612_and_qemu_72_to_100(fs):
    code, rep = _diff(fs, "v6.1.176", "v7.2.0", "v6.12.8", "v10.0.13")
    assert code == 1
    items = {(i["kind"], i["subject"]) for i in rep["items"]}
    for expected in [
        ("renamed", "kvm_hvc_call_handler -> kvm_smccc_call_handler"),
        ("renamed", "arm_cpu_reset -> arm_cpu_reset_hold"),
        ("renamed", "kvm_arm_gicv3_reset -> kvm_arm_gicv3_reset_hold"),
        ("renamed", "kvm_arm_its_reset -> kvm_arm_its_reset_hold"),
        ("registration-api-changed", "arm_cpu_class_init: device_class_set_parent_reset -> resettable_class_set_parent_phases"),
        ("registration-api-changed", "kvm_arm_gicv3_class_init: device_class_set_parent_reset -> resettable_class_set_parent_phases"),
        ("registration-api-changed", "kvm_arm_its_class_init: device_class_set_parent_reset -> resettable_class_set_parent_phases"),
        ("moved", "softmmu/runstate.c -> system/runstate.c"),
        ("signature-changed", "6 functions: DeviceState* -> Object*, ResetType"),  # one mechanical change
        ("path-changed", "qemu_devices_reset -> resettable_reset"),
        ("newly-verified", "handle_smc -> kvm_smccc_call_handler|kvm_hvc_call_handler"),
    ]:
        assert expected in items
    assert not [i for i in rep["items"] if i["severity"] == "broken"]
    ren = next(i for i in rep["items"] if i["subject"] == "kvm_hvc_call_handler -> kvm_smccc_call_handler")
    assert (ren["old"]["path"], ren["old"]["line"], ren["new"]["line"]) == ("arch/arm64/kvm/hypercalls.c", 124, 263)


# -- cold questions and the index (issue: speed) ------------------------------------------------------
COLD = [
    ("linux", "v6.12.8", LINUX_SCOPE, ["callers psci_sys_reset", "callers kernel_restart", "callees machine_restart",
                                       "callers handle_hvc", "callees kvm_psci_1_x_call",
                                       "callers kvm_prepare_system_event"]),
    ("qemu", "v10.0.13", QEMU_SCOPE, ["callers qemu_system_reset_request", "callers arm_cpu_reset_hold",
                                      "callees qemu_system_reset", "callers kvm_arm_gicv3_put"]),
    ("qemu", "v10.0.13", (), ["callers qemu_system_reset_request", "callers kvm_arm_reset_vcpu",
                              "callees resettable_phase_hold"]),
]


@pytest.mark.parametrize("project,ref,scope,questions", COLD, ids=["linux-reboot", "qemu-reboot", "qemu-whole"])
def test_cold_answers_equal_the_index(capsys, tmp_path, cache, project, ref, scope, questions):
    """Answers from the files that spell what a question needs equal those of the whole index; on the
    whole of QEMU such a question reads under 3% of the files (checked against `--whole`, the index)."""
    repo = LINUX if project == "linux" else QEMU
    cold_cache = tmp_path / "cold"
    cold_cache.mkdir()
    (cache / "facts").mkdir(parents=True, exist_ok=True)
    os.symlink(cache / "facts", cold_cache / "facts")  # share extracted facts, not indexes
    for q in questions:
        cmd, name = q.split()
        args = (cmd, name, "--repo", str(repo), "--ref", ref, *scope, "--format", "json")
        code, whole, err = run(capsys, "-q", "--cache-dir", str(cache), *args[:2], "--whole", *args[2:])
        assert code == 0, err
        code, cold, err = run(capsys, "--cache-dir", str(cold_cache), *args)
        assert code == 0 and "Traceback" not in err
        assert json.loads(cold) == json.loads(whole), q
        used = [l for l in err.splitlines() if "answered from the" in l]
        if not scope:
            n, total = (int(x.replace(",", "")) for x in used[0].split("answered from the ")[1].split(" files")[0]
                        .split(" of "))
            assert n < 0.03 * total, used
    if not scope:  # (a question on a small scope may need enough of it to build its index instead)
        assert not list((cold_cache / "index").glob("*.sqlite"))


def test_index_is_built_once_and_reused(fs):
    code, out, _ = fs("index", *qemu("v10.0.13"), *QEMU_SCOPE)
    assert code == 0
    code, out, _ = fs("index", *qemu("v10.0.13"), *QEMU_SCOPE)
    assert code == 0 and "(already indexed, 0 skipped)" in out and out.startswith("qemu@v10.0.13: ")


def test_answers_do_not_depend_on_the_hash_seed(cache):
    """arm64_apply_bp_hardening's __always_inline callees call IS_ENABLED from several lines of cpucaps.h: edges
    equal in path, line and callee, different in where the inline body calls it. Their order came from a set
    (three seeds, three outputs); the answer must be the same on every run."""
    args = [sys.executable, "-m", "flowscan", "-q", "--cache-dir", str(cache), "callees", "arm64_apply_bp_hardening",
            *linux("v6.12.8"), *LINUX_SCOPE]
    outs = {subprocess.run(args, capture_output=True, text=True, cwd=HERE, check=True,
                           env={**os.environ, "PYTHONPATH": str(HERE), "PYTHONHASHSEED": seed}).stdout
            for seed in ("1", "2", "3")}
    assert len(outs) == 1
    (out,) = outs
    lines = [ln for ln in out.splitlines() if "-> IS_ENABLED" in ln and "cpucap_is_possible" in ln]
    assert len(lines) > 3 and lines == sorted(lines, key=lambda ln: int(ln.split("cpucaps.h:")[1].split(")")[0]))


def test_callers_through_a_kept_parent_callback_on_qemu_72(fs):
    """QEMU 7.2 keeps the parent's reset: `device_class_set_parent_reset(dc, arm_cpu_reset, &acc->parent_reset)`
    (target/arm/cpu.c:2218) and arm_cpu_reset calls `acc->parent_reset(dev)` (line 212), which is the CPU
    class's `dc->reset = cpu_common_reset` (hw/core/cpu-common.c:272). callers() missed that call (its member
    is `parent_reset`, not `reset`), and so did route()'s walk back from cpu_common_reset."""
    code, out, _ = fs("callers", "cpu_common_reset", *qemu("v7.2.0"), "--scope", "target/arm", "--scope", "hw/core",
                      "--scope", "include/hw")
    assert code == 0
    assert ("target/arm/cpu.c:212: arm_cpu_reset -> cpu_common_reset  [qom-parent: cpu.reset "
            "(stored at hw/core/cpu-common.c:272)]") in out.splitlines()
