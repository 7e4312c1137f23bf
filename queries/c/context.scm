; The statements that give a call its context: the if conditions and case labels around it, up to the
; function it is in (swept as byte intervals, see flowscan/extract/context.py).
(if_statement) @if
(case_statement) @case
(function_definition) @function
