"""`path` and `types` on whole real trees, cold: from the files that spell what they need, no index built.

Checked against `--whole` (the index of the whole tree) and by reading the files: on Linux v6.12.8,
handle_trap_exceptions calls the handler kvm_get_exit_handler() returns, `arm_exit_handlers[esr_ec]`
(arch/arm64/kvm/handle_exit.c:351, inside `if (kvm_condition_valid(vcpu))`); the table's 27 slots hold
handle_hvc at [ESR_ELx_EC_HVC32] and [ESR_ELx_EC_HVC64] (line 303). Nothing else calls handle_hvc, so
no narrower route exists: route() sees that by walking back from handle_hvc (one function) instead of
walking the 6,134 functions handle_trap_exceptions reaches; cold, it walks back first, before any forward
search asks for the files of the 27 handlers' callees and macros. On QEMU v10.0.13, qemu_system_reset calls
qemu_devices_reset when the machine has no reset method (system/runstate.c:527), which calls
resettable_reset on the root of the reset tree (hw/core/reset.c:176); kvm_arm_gicv3_class_init registers
kvm_arm_gicv3_reset_hold with resettable_class_set_parent_phases at hw/intc/arm_gicv3_kvm.c:922 (its type,
TYPE_KVM_ARM_GICV3, is "kvm-arm-gicv3", its parent TYPE_ARM_GICV3_COMMON "arm-gicv3-common"), and
kvm_arm_its_class_init kvm_arm_its_reset_hold at hw/intc/arm_gicv3_its_kvm.c:251.
"""

from __future__ import annotations

import re

import pytest

from tests.helpers import run
from tests.test_realtrees import LINUX, QEMU, _have

pytestmark = pytest.mark.realtrees


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    for repo, tag in ((LINUX, "v6.12.8"), (QEMU, "v10.0.13")):
        if not _have(repo, tag):
            pytest.skip(f"real trees not built ({repo}@{tag}); run ../shared/realtrees/get-real-trees")
    return tmp_path_factory.mktemp("coldpath")


def _cold(capsys, cache, *args):
    code, out, err = run(capsys, "--cache-dir", str(cache), *args)
    assert "Traceback" not in err
    used = re.search(r"answered from the ([\d,]+) of ([\d,]+) files", err)
    assert used, err  # from the files it needed: no index of the whole tree
    assert not list((cache / "index").glob("*.sqlite"))
    return code, out, tuple(int(x.replace(",", "")) for x in used.groups())


def test_linux_exit_handler_path_cold(capsys, trees):
    code, out, (n, total) = _cold(capsys, trees / "linux", "path", "handle_trap_exceptions", "handle_hvc",
                                  "--repo", str(LINUX), "--ref", "v6.12.8")
    assert code == 0
    assert out == ("1. handle_trap_exceptions -> handle_hvc  arch/arm64/kvm/handle_exit.c:351  [table: exit_handle_fn "
                   "(stored at arch/arm64/kvm/handle_exit.c:303, 1 of 27)]  [if (kvm_condition_valid(vcpu))]\n")
    assert n < 100  # walked back from handle_hvc first: 16 files (a forward search first read 4,134)


def test_qemu_reset_path_cold_equals_the_index(capsys, trees):
    args = ("path", "qemu_system_reset", "resettable_reset", "--repo", str(QEMU), "--ref", "v10.0.13")
    code, cold, (n, total) = _cold(capsys, trees / "qemu", *args)
    assert code == 0 and n < 1500  # 845 files (3,738 when the walk back ran to its level's end)
    assert cold == ("1. qemu_system_reset -> qemu_devices_reset  system/runstate.c:527  [direct]  "
                    "[if (!(mc && mc->reset))]\n"
                    "2. qemu_devices_reset -> resettable_reset  hw/core/reset.c:176  [direct]\n")
    types = {}
    for name in ("kvm-arm-gicv3", "TYPE_ARM_CPU"):  # by its string (found through its #define), by its macro
        code, types[name], _ = _cold(capsys, trees / "qemu", "types", name, *args[3:])
        assert code == 0
    assert types["kvm-arm-gicv3"].splitlines()[:3] == [
        "kvm-arm-gicv3 (TYPE_KVM_ARM_GICV3) hw/intc/arm_gicv3_kvm.c:926 class_init=kvm_arm_gicv3_class_init",
        "  ancestry: kvm-arm-gicv3 -> arm-gicv3-common -> sys-bus-device -> device -> object",
        "  hold: kvm_arm_gicv3_reset_hold at hw/intc/arm_gicv3_kvm.c:922"]
    # registrations of one API: from the files that call it (and the #defines naming their types)
    code, regs, (n, _total) = _cold(capsys, trees / "qemu", "registrations", "--api",
                                    "resettable_class_set_parent_phases", *args[3:])
    assert code == 0 and n < 100
    for line in ("hw/intc/arm_gicv3_kvm.c:922: resettable_class_set_parent_phases in kvm_arm_gicv3_class_init "
                 "type=kvm-arm-gicv3 parent=arm-gicv3-common: hold=kvm_arm_gicv3_reset_hold "
                 "parent-storage=&kgc->parent_phases",
                 "hw/intc/arm_gicv3_its_kvm.c:251: resettable_class_set_parent_phases in kvm_arm_its_class_init "
                 "type=arm-its-kvm parent=arm-gicv3-its-common: hold=kvm_arm_its_reset_hold "
                 "parent-storage=&ic->parent_phases"):
        assert line in regs.splitlines()
    code, whole, _ = run(capsys, "-q", "--cache-dir", str(trees / "qemu"), *args, "--whole")
    assert (code, whole) == (0, cold)
    assert run(capsys, "-q", "--cache-dir", str(trees / "qemu"), "registrations", "--api",
               "resettable_class_set_parent_phases", *args[3:])[:2] == (0, regs)  # warm: the index's
    for name, text in types.items():  # the index is there now: warm
        assert run(capsys, "-q", "--cache-dir", str(trees / "qemu"), "types", name, *args[3:])[:2] == (0, text)


def test_qemu_route_to_a_hold_phase_on_the_whole_index(capsys, trees):
    """On the whole-QEMU index (built by the test above), qemu_system_reset reaches arm_cpu_reset_hold only
    through the dispatch of every hold phase (hw/core/resettable.c:162, `rc->phases.hold(obj, type)`),
    and proving that no narrower route exists is out of reach both ways: more than 3,000 functions reach
    arm_cpu_reset_hold, more than 2,000 are reachable. The search stops (it took minutes and 10 GB) and
    says so. The route runs as on a virt machine, through the direct call qemu_devices_reset
    (runstate.c:527), not through `mc->reset` (runstate.c:525, 1 of 11 machines' reset methods, the first
    of them hppa_machine_reset): both are as wide (the hold dispatch) and as long, and a path search follows
    direct calls first. With the aarch64 build configuration the hold dispatch reaches only the built holds."""
    args = ("path", "qemu_system_reset", "arm_cpu_reset_hold", "--repo", str(QEMU), "--ref", "v10.0.13")
    widths = []
    for config in ((), ("--build-config", "qemu-aarch64-softmmu-kvm")):
        code, out, err = run(capsys, "--cache-dir", str(trees / "qemu"), *args, *config)
        assert code == 0 and "Traceback" not in err
        assert "a narrower route was not ruled out: the search for one stopped after 2,000 functions" in err
        lines = out.splitlines()
        assert lines[:4] == [
            "1. qemu_system_reset -> qemu_devices_reset  system/runstate.c:527  [direct]  [if (!(mc && mc->reset))]",
            "2. qemu_devices_reset -> resettable_reset  hw/core/reset.c:176  [direct]",
            "3. resettable_reset -> resettable_assert_reset  hw/core/resettable.c:45  [direct]",
            "4. resettable_assert_reset -> resettable_phase_hold  hw/core/resettable.c:58  [direct]"], config
        hop = re.fullmatch(r"5\. resettable_phase_hold -> arm_cpu_reset_hold  hw/core/resettable\.c:162  \[registration: "
                           r"phases\.hold \(stored at target/arm/cpu\.c:2707, 1 of (\d+)\)\].*", lines[4])
        assert hop and len(lines) == 5
        widths.append(int(hop.group(1)))
    assert widths[0] > widths[1] > 30  # every hold phase of the tree; the built ones
