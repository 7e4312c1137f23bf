"""Conditions of a call site decided under a flow's defaults: true, false, or not decided statically."""

from __future__ import annotations

import pytest

from flowscan.flow.conditions import combine, decide_case, decide_if

WARM = "(reboot_mode == REBOOT_WARM || reboot_mode == REBOOT_SOFT) && psci_system_reset2_supported"
COLD = {"reboot_mode": "REBOOT_COLD"}


@pytest.mark.parametrize("text,defaults,value,why", [
    (WARM, COLD, False, "reboot_mode = REBOOT_COLD"),  # false whatever the firmware supports
    (f"!({WARM})", COLD, True, "reboot_mode = REBOOT_COLD"),  # the else branch
    (WARM, {"reboot_mode": "REBOOT_WARM"}, None, "not decided statically: psci_system_reset2_supported"),
    (WARM, {}, None, "not decided statically: reboot_mode, psci_system_reset2_supported"),
    ("efi_enabled(EFI_RUNTIME_SERVICES)", COLD, None, "not decided statically: efi_enabled(EFI_RUNTIME_SERVICES)"),
    ("mode != 0", {"mode": "0"}, False, "mode = 0"),
    ("s->hold_phase_pending", {}, None, "not decided statically: s->hold_phase_pending"),
    ("a > 3", {"a": "4"}, None, "not decided statically: a > 3"),  # beyond this grammar: not guessed
])
def test_decide_if(text, defaults, value, why):
    d = decide_if(text, defaults)
    assert (d.value, d.why) == (value, why)


def test_decide_case_and_combine():
    labels = ["LINUX_REBOOT_CMD_RESTART", "LINUX_REBOOT_CMD_RESTART2"]
    cmd = {"cmd": "LINUX_REBOOT_CMD_RESTART"}
    assert decide_case("LINUX_REBOOT_CMD_RESTART", "cmd", labels, cmd).value is True
    assert decide_case("LINUX_REBOOT_CMD_RESTART2", "cmd", labels, cmd).value is False
    assert decide_case("default", "cmd", labels, cmd).value is False
    assert decide_case("default", "cmd", labels, {"cmd": "OTHER"}).value is True
    assert decide_case("LINUX_REBOOT_CMD_RESTART", "cmd", labels, {}).value is None
    assert (combine([True, None]), combine([None, False]), combine([])) == (None, False, True)
