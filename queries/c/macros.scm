; Object-like #defines; Python keeps those whose value is a string literal (QOM type names).
(preproc_def name: (identifier) @name value: (preproc_arg) @value)
