; Function definitions. The name sits in the innermost function_declarator, possibly under pointer
; declarators (functions returning pointers). @def is the whole definition.
(function_definition
  declarator: (function_declarator declarator: (identifier) @name parameters: (parameter_list) @params)) @def
(function_definition
  declarator: (pointer_declarator declarator: (function_declarator declarator: (identifier) @name parameters: (parameter_list) @params))) @def
(function_definition
  declarator: (pointer_declarator declarator: (pointer_declarator declarator: (function_declarator declarator: (identifier) @name parameters: (parameter_list) @params)))) @def
(function_definition
  declarator: (attributed_declarator (function_declarator declarator: (identifier) @name parameters: (parameter_list) @params))) @def
