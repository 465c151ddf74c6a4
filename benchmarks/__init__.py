"""Benchmarks (not part of the installed package): ``python benchmarks/step_time.py``."""
