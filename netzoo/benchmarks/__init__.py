"""Measurements run by hand or by `make bench`, each a function returning a DataFrame; never timed in tests."""
