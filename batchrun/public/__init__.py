"""The Python API, what ``import batchrun`` hands out: ``run`` / ``run_async`` for a job or
for rows held in memory (``run``; rows are staged as a file by ``frames``), and the one
result they return (``result.RunResult``: the summary, the exit code, the output table, the
summary as JSON). The estimate, validate, report and batch commands live with their
concerns and are re-exported by ``batchrun/__init__.py``."""
