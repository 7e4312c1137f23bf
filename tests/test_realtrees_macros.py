"""Macros on the real trees: calls through a #define, handoff constants built by token pasting.

Every expected line was checked by reading the files at the tag: include/linux/arm-smccc.h
(`#define arm_smccc_hvc(...) __arm_smccc_hvc(__VA_ARGS__, NULL)`), drivers/firmware/psci/psci.c
(`PSCI_FN_NATIVE`: `#ifdef CONFIG_64BIT` at line 38, the FN64 paste on 39, the #else one on 41;
`__invoke_psci_fn_hvc` calls `arm_smccc_hvc` on 118/119; `psci_0_2_cpu_on` passes
`PSCI_FN_NATIVE(0_2, CPU_ON)` to `__psci_cpu_on`) and arch/arm64/kvm/psci.c (`kvm_psci_0_2_call`:
`case PSCI_0_2_FN64_CPU_ON:` then `val = kvm_psci_vcpu_on(vcpu);`).
"""

from __future__ import annotations

import json

import pytest

from tests.test_realtrees import HERE, LINUX, linux, cache, fs  # noqa: F401  (fixtures)

pytestmark = pytest.mark.realtrees

# tag -> (line of the arm_smccc_hvc #define, line of the call in __invoke_psci_fn_hvc)
SMCCC = {"v6.1.176": (372, 118), "v6.12.8": (463, 118), "v7.2.8": (545, 119)}
# tag -> (line of PSCI_FN_NATIVE(0_2, CPU_ON) in psci_0_2_cpu_on, line of the host's case label)
CPU_ON = {"v6.1.176": (230, 265), "v6.12.8": (231, 265), "v7.2.8": (232, 271)}


@pytest.mark.parametrize("tag", sorted(SMCCC))
def test_arm_smccc_hvc_is_a_macro_for_the_assembly_entry(fs, tag):
    define, call = SMCCC[tag]
    code, out, _ = fs("callees", "__invoke_psci_fn_hvc", *linux(tag), "--scope", "drivers/firmware/psci",
                      "--scope", "include/linux/arm-smccc.h", "--direct-only")
    assert code == 0
    assert out == (f"drivers/firmware/psci/psci.c:{call}: __invoke_psci_fn_hvc -> __arm_smccc_hvc (not defined in "
                   f"scope)  [macro: arm_smccc_hvc (#define at include/linux/arm-smccc.h:{define})]\n")


@pytest.mark.parametrize("tag", sorted(CPU_ON))
def test_user_flow_with_a_token_pasted_handoff_constant_verifies(fs, tag):
    use, case = CPU_ON[tag]
    code, out, err = fs("trace", "--flow-file", str(HERE / "docs" / "examples" / "psci-cpu-on.toml"),
                        "--guest-repo", str(LINUX), "--guest", tag, "--host-repo", str(LINUX), "--host", tag,
                        "--format", "json")
    assert code == 0, err
    hops = {h["id"] or f"{h['frm']}->{h['to']}": h for h in json.loads(out)["hops"]}
    assert all(h["status"] == "verified" for h in hops.values()), [h for h in hops.values() if h["status"] != "verified"]
    hop = hops["psci:CPU_ON"]
    where = {(e["what"], e["path"], e["line"], e["constant"], e["macro"]) for e in hop["evidence"]}
    assert ("call-arg", "drivers/firmware/psci/psci.c", use, "PSCI_FN_NATIVE(0_2, CPU_ON)", "PSCI_FN_NATIVE") in where
    assert ("macro", "drivers/firmware/psci/psci.c", 39, "PSCI_0_2_FN64_CPU_ON", "PSCI_FN_NATIVE") in where
    assert ("case", "arch/arm64/kvm/psci.c", case, "PSCI_0_2_FN64_CPU_ON", "") in where
    assert hop["conditions"] == ["#if CONFIG_64BIT", "case PSCI_0_2_FN64_CPU_ON"]
    smccc = hops["__invoke_psci_fn_hvc->__arm_smccc_hvc"]
    assert [(s["kind"], s["via"], s["store_path"], s["store_line"]) for s in smccc["steps"]] == \
        [("macro", "arm_smccc_hvc", "include/linux/arm-smccc.h", SMCCC[tag][0])]
