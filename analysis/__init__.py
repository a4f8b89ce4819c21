"""netzoo's analysis: each question about the population is a pure function from result tables to a DataFrame.

Charts are separate functions returning a matplotlib Figure; netzoo.report only assembles them.
"""
