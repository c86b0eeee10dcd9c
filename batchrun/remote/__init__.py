"""Outputs and inputs on object storage (S3, GCS): reading and writing objects all or nothing
(``objects``), one run at a time on an output (``lease``), the local mirror of a remote
output whose journal is sealed into segments and whose final file is one upload
(``mirror``), and the Message Batches journal kept beside it (``batch_mirror``); the answer
cache across jobs, a folder or a prefix (``answer_cache``). Loaded only by jobs that name an
``s3://`` or ``gs://`` location, or an answer cache."""
