; Assignments that store a name (maybe a function) or a constant:
; `dc->reset = foo`, `rc->phases.hold = bar`, `invoke_psci_fn = __invoke_psci_fn_hvc`,
; `run->exit_reason = KVM_EXIT_SYSTEM_EVENT`.
(assignment_expression left: (_) @lhs operator: "=" right: (identifier) @value) @assign
(assignment_expression left: (_) @lhs operator: "=" right: (pointer_expression argument: (identifier) @value)) @assign
; `return fn;` hands a function out of a getter (`return device_transitional_reset;`).
(return_statement (identifier) @value) @return
