; Every call expression; Python classifies the callee (identifier, field, parenthesized, subscript).
(call_expression function: (_) @fn arguments: (argument_list) @args) @call
