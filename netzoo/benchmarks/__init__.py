"""Measurements run by hand or by `make bench`, never timed in tests: ``study`` (the study's way of training
against netzoo's, `netzoo bench`), ``volume`` (result volume and question 8 at the study's size), ``fusion`` (fused
runs against one at a time)."""
