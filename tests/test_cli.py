"""The query commands on the fixture trees (exact hops and file:line), and bad input (one line, exit 2)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.helpers import one_line_error, run


@pytest.fixture
def q(capsys, tmp_path):
    def call(*args):
        return run(capsys, "-q", "--cache-dir", str(tmp_path / "cache"), *args)
    return call


def test_path_reboot_syscall_to_restart_handler(q, linux_new):
    code, out, _ = q("path", "reboot", "psci_sys_reset", "--src", str(linux_new))
    assert code == 0
    assert out.splitlines() == [
        "1. reboot -> kernel_restart  kernel/reboot.c:153  [direct]  [case LINUX_REBOOT_CMD_RESTART]",
        "2. kernel_restart -> machine_restart  kernel/reboot.c:99  [direct]",
        "3. machine_restart -> do_kernel_restart  arch/arm64/kernel/process.c:56  [direct]",
        "4. do_kernel_restart -> psci_sys_reset  kernel/reboot.c:76  [notifier: restart_handler_list "
        "(stored at drivers/firmware/psci/psci.c:108)]",
    ]


def test_path_main_loop_reset_to_device_hold(q, qemu_new):
    code, out, _ = q("path", "main_loop_should_exit", "kvm_arm_gicv3_reset_hold", "--src", str(qemu_new),
                     "--format", "json")
    assert code == 0
    got = [(e["caller"], e["callee"], e["kind"], f"{e['path']}:{e['line']}") for e in json.loads(out)]
    assert got == [
        ("main_loop_should_exit", "qemu_system_reset", "direct", "system/runstate.c:115"),
        ("qemu_system_reset", "qemu_devices_reset", "direct", "system/runstate.c:64"),
        ("qemu_devices_reset", "resettable_reset", "direct", "hw/core/reset.c:118"),
        ("resettable_reset", "resettable_assert_reset", "direct", "hw/core/resettable.c:17"),
        ("resettable_assert_reset", "resettable_phase_hold", "direct", "hw/core/resettable.c:30"),
        ("resettable_phase_hold", "kvm_arm_gicv3_reset_hold", "registration", "hw/core/resettable.c:71"),
    ]
    assert json.loads(out)[-1]["store_path"] == "hw/intc/arm_gicv3_kvm.c"


def test_path_direct_only_and_no_path(q, linux_new):
    code, _, err = q("path", "machine_restart", "psci_sys_reset", "--direct-only", "--src", str(linux_new))
    assert code == 1 and "no call path from machine_restart to psci_sys_reset" in err


def test_callees_machine_restart(q, linux_new):
    code, out, _ = q("callees", "machine_restart", "--src", str(linux_new))
    assert code == 0
    lines = [l for l in out.splitlines() if re.search(r"-> (smp_send_stop|efi_reboot|do_kernel_restart) ", l)]
    assert lines == [
        "arch/arm64/kernel/process.c:49: machine_restart -> smp_send_stop (arch/arm64/kernel/smp.c)  [direct]",
        "arch/arm64/kernel/process.c:53: machine_restart -> efi_reboot (drivers/firmware/efi/reboot.c)  [direct]"
        "  [if (efi_enabled(EFI_RUNTIME_SERVICES))]",
        "arch/arm64/kernel/process.c:56: machine_restart -> do_kernel_restart (kernel/reboot.c)  [direct]",
    ]
    assert "arch/x86" not in out  # arm64 preferred over the x86 definition


def test_callers_qemu_system_reset(q, qemu_new):
    code, out, _ = q("callers", "qemu_system_reset", "--src", str(qemu_new))
    assert code == 0
    assert "system/runstate.c:115: main_loop_should_exit -> qemu_system_reset  [direct]  [if (request)]" in \
        out.splitlines()


def test_defs_keeps_every_architecture(q, linux_new):
    code, out, _ = q("defs", "machine_restart", "--src", str(linux_new))
    assert code == 0
    assert out.splitlines() == ["arch/arm64/kernel/process.c:46: void machine_restart(char *cmd)",
                                "arch/x86/kernel/reboot.c:131: void machine_restart(char *cmd)"]
    code, out, _ = q("defs", "efi_reboot", "--src", str(linux_new), "--format", "json")
    conds = sorted(tuple(d["conditions"]) for d in json.loads(out))
    assert conds == [(), ("!CONFIG_EFI",)]


def test_scope_limits_the_scan(q, linux_new):
    code, out, _ = q("defs", "machine_restart", "--src", str(linux_new), "--scope", "arch/arm64")
    assert code == 0 and out.splitlines() == ["arch/arm64/kernel/process.c:46: void machine_restart(char *cmd)"]


def _grep_count(root, needle: str) -> int:
    out = subprocess.run(["grep", "-rn", "--include=*.c", needle, str(root)], capture_output=True, text=True)
    return sum(1 for l in out.stdout.splitlines() if not re.search(r":\s*void\s+" + re.escape(needle), l))


@pytest.mark.parametrize("tree,api", [("qemu_new", "resettable_class_set_parent_phases"),
                                      ("qemu_old", "device_class_set_parent_reset")])
def test_registrations_match_grep(q, request, tree, api):
    root = request.getfixturevalue(tree)
    code, out, _ = q("registrations", "--api", api, "--src", str(root), "--format", "csv")
    assert code == 0
    rows = out.splitlines()[1:]
    assert len(rows) == _grep_count(root, api + "(") and rows
    by_ci = {r.split(",")[3]: r for r in rows}
    assert set(by_ci) >= {"arm_cpu_class_init", "kvm_arm_gicv3_class_init", "kvm_arm_its_class_init"}


def test_registrations_rows_for_the_three_class_inits(q, qemu_new):
    code, out, _ = q("registrations", "--api", "resettable_class_set_parent_phases", "--src", str(qemu_new))
    assert code == 0
    assert ("hw/intc/arm_gicv3_kvm.c:116: resettable_class_set_parent_phases in kvm_arm_gicv3_class_init "
            "type=kvm-arm-gicv3 parent=arm-gicv3-common: hold=kvm_arm_gicv3_reset_hold "
            "parent-storage=&kgc->parent_phases") in out.splitlines()
    assert "target/arm/cpu.c:92: resettable_class_set_parent_phases in arm_cpu_class_init type=arm-cpu " \
           "parent=cpu: hold=arm_cpu_reset_hold parent-storage=&acc->parent_phases" in out.splitlines()


def test_types_hierarchy_and_phases(q, qemu_new):
    code, out, _ = q("types", "TYPE_ARM_CPU", "--src", str(qemu_new), "--format", "json")
    assert code == 0
    (t,) = json.loads(out)
    assert (t["name"], t["ancestors"], t["phases"]["hold"]["function"]) == (
        "arm-cpu", ["cpu", "device"], "arm_cpu_reset_hold")


# -- bad input: one line, exit 2 ----------------------------------------------------------------------
def test_missing_directory(q):
    code, _, err = q("callees", "f", "--src", "/no/such/dir")
    assert code == 2 and one_line_error(err) == "flowscan: error: no such directory: /no/such/dir"


def test_directory_without_c_files(q, tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("hello")
    code, _, err = q("callees", "f", "--src", str(tmp_path / "docs"))
    assert code == 2 and "no C files to analyse" in one_line_error(err)


def test_not_c_binary_and_huge_files_are_skipped_not_fatal(q, tmp_path):
    src = tmp_path / "t"
    src.mkdir()
    (src / "ok.c").write_text("void g(void) {}\nvoid f(void) { g(); }\n")
    (src / "bin.c").write_bytes(b"\x7fELF\x00\x00" * 100)
    (src / "huge.c").write_bytes(b"int x;\n" * 800_000)
    (src / "notc.c").write_text("This is prose, not C at all: {{{ ]] ((\n")
    code, out, err = q("callees", "f", "--src", str(src))
    assert code == 0 and "ok.c:2: f -> g" in out and "Traceback" not in err
    code, _, err = q("callees", "f", "--src", str(src / "bin.c"))
    assert code == 2 and one_line_error(err)


def test_all_files_binary(q, tmp_path):
    src = tmp_path / "b"
    src.mkdir()
    (src / "bin.c").write_bytes(b"\x00\x01\x02" * 50)
    code, _, err = q("callees", "f", "--src", str(src))  # cold: no file spells f
    assert code == 2 and "function 'f' is not defined in the scanned tree (from the files that spell it" in one_line_error(err)
    code, _, err = q("callees", "f", "--whole", "--src", str(src))
    assert code == 2 and "no C files to analyse" in one_line_error(err)


def test_unknown_function(q, linux_new):
    code, _, err = q("callees", "machine_restrat", "--src", str(linux_new))  # cold: no file spells it
    assert code == 2
    assert one_line_error(err) == ("flowscan: error: function 'machine_restrat' is not defined in the scanned "
                                   "tree (from the files that spell it; with --whole, similar names are listed)")
    code, _, err = q("callees", "machine_restrat", "--whole", "--src", str(linux_new))
    assert code == 2
    assert one_line_error(err) == ("flowscan: error: function 'machine_restrat' is not defined in the scanned "
                                   "tree (did you mean machine_restart, native_machine_restart?)")


@pytest.mark.parametrize("scope,msg", [("../etc", "points outside the tree"), ("/etc", "outside the tree"),
                                       ("nothere", "matches nothing")])
def test_scope_outside_or_missing(q, linux_new, scope, msg):
    code, _, err = q("callees", "machine_restart", "--src", str(linux_new), "--scope", scope)
    assert code == 2 and msg in one_line_error(err)


@pytest.mark.parametrize("args,msg", [
    (("callees", "f"), "no tree given"),
    (("callees", "f", "--repo", "/tmp"), "--repo needs --ref"),
    (("registrations", "--api", "nope", "--src", "."), "unknown registration API 'nope'"),
    (("trace", "no-such-flow"), "unknown flow 'no-such-flow'"),
    (("callees",), "Missing argument 'FUNC'"),
    (("path", "a", "b", "--max-depth", "0", "--src", "."), "Invalid value for '--max-depth'"),
])
def test_usage_errors(q, args, msg):
    code, _, err = q(*args)
    assert code == 2 and msg in one_line_error(err)


def test_console_script_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "flowscan", "-q", "--cache-dir", str(tmp_path), "callees", "x",
                           "--src", str(tmp_path / "nope")], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == f"flowscan: error: no such directory: {tmp_path / 'nope'}\n"


def test_sources_shows_config_cache_and_hit_rates(capsys, tmp_path, fixture_repos, monkeypatch):
    (tmp_path / "flowscan.toml").write_text(
        f'flow = "arm64-reboot"\n[sources.guest]\nrepo = "{fixture_repos["linux"]}"\nref = "v6.12"\n'
        f'[sources.host]\nrepo = "{fixture_repos["linux"]}"\nref = "v6.12"\n'
        f'[sources.vmm]\nrepo = "{fixture_repos["qemu"]}"\nref = "v10.0.0"\n')
    monkeypatch.chdir(tmp_path)
    cache = str(tmp_path / "cache")
    assert run(capsys, "-q", "--cache-dir", cache, "trace")[0] == 0  # the config names everything
    assert run(capsys, "-q", "--cache-dir", cache, "trace")[0] == 0
    code, out, _ = run(capsys, "--cache-dir", cache, "sources")
    assert code == 0
    assert f"config: {tmp_path / 'flowscan.toml'}" in out
    assert f"  vmm: {fixture_repos['qemu']} @ v10.0.0" in out
    assert "refs: v10.0.0" in out
    assert re.search(r"last scan of qemu@v10.0.0 \(.*\): 35 files, from its index, ", out)  # second trace
    # (guest and host scopes differ: one index each, and one for QEMU)
    assert re.search(r"  index: qemu@v10.0.0 \(.+\), 35 files, [0-9.]+ MB", out)
    code, out, _ = run(capsys, "--cache-dir", cache, "sources", "--format", "json")
    idx = json.loads(out)["indexes"]
    assert idx["entries"] == 3 and {t["tree"] for t in idx["trees"]} == {"linux@v6.12", "qemu@v10.0.0"}
