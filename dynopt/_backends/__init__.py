"""Backends: thin adapters that turn any :class:`dynopt.spec.Spec` into a usable optimizer.

No file here names a specific optimizer; ``tests/test_structure.py`` checks it.
"""
