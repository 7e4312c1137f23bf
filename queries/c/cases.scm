; Case labels, with the switch they belong to.
(case_statement value: (_) @value) @case
