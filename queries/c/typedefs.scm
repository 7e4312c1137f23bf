; Function-pointer typedefs: `typedef void (*ResettableHoldPhase)(Object *obj, ResetType type);`
; (the type of the fields callbacks are stored in; drift reports a change of their parameters).
(type_definition type: (_) @rtype declarator: (function_declarator
  declarator: (parenthesized_declarator (pointer_declarator declarator: (type_identifier) @name))
  parameters: (parameter_list) @params))
