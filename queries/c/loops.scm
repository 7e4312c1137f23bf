; Loops: the pre-pass writes `while` (or `for(;;)`) over an iterator macro's name (`for_each_cpu(cpu, m) {`);
; Python reads the name back from the file as written, and records the iterator as a call of that macro.
(while_statement condition: (parenthesized_expression) @cond) @loop
(for_statement) @loop
