"""The test suite, a regular package so that `tests.*` helpers resolve to this folder even when
an installed distribution ships its own top-level `tests` package (latex2sympy2, pulled in by
lmms-eval, does)."""
