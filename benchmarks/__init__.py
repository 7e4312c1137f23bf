"""flowscan benchmarks: flowscan against raw tree-sitter parsing, Universal Ctags and cscope on real trees.

Run ``python -m benchmarks --help`` (or ``make bench``). Results and the meaning of each row are in
docs/benchmarks.md.
"""
