; Designated initializers whose value names a function: `.notifier_call = psci_sys_reset`,
; `[ESR_ELx_EC_HVC64] = handle_hvc`, `.class_init = foo`, `.fn = &bar`.
(initializer_pair value: (identifier) @value) @pair
(initializer_pair value: (pointer_expression argument: (identifier) @value)) @pair
; A function pointer variable initialised with a function: `int (*qemu_main)(void) = qemu_default_main;`.
(init_declarator declarator: (function_declarator declarator: (parenthesized_declarator
  (pointer_declarator declarator: (identifier) @var))) value: [(identifier) @value
                                                              (pointer_expression argument: (identifier) @value)]) @pair
