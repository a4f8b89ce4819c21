"""Where a TrainJob's tasks run besides local worker processes: ``ray`` (a Ray cluster, or a local one).

An executor only decides where ``netzoo.runner.run_tasks`` runs; planning, claims and the atomic part files
are the runner's, so every executor writes the same rows and resumes the same way.
"""
