"""What the tests of every layer share (``tests/`` is on ``sys.path``: see tests/conftest.py).

The everyday helpers are importable from here (``from support import job_config``); the
servers are in modules of their own, imported where a test needs one:

- ``runs``: input files, job configs (online, batches, the Python API), answer tags, a run as a
  real process, its journal, its output checked
- ``transports``: a recording loopback transport, stand-in Messages, free retry waits
- ``waiting``: ``wait_until``, the one poll-until-deadline of the tests
- ``local_server``: a server subprocess on 127.0.0.1 (``free_port``)
- ``s3_server``: moto's S3 server and the GCS emulator; ``redis_server``: a real Redis
- ``openapi``: the API's schemas as validators; ``outputs``: output rows and files of them
- ``mock_api``: the API through httpx.MockTransport; ``canaries``: planted secrets, looked for
- ``tcp_proxy``: a TCP proxy a test can cut, as a network would fail
- ``ray_netns``: Ray run in a network namespace of its own (``ray_scripts/`` are its drivers)
"""

from support.runs import (
    TEST_KEY,
    against,
    assert_answers,
    batch_config,
    check_output,
    job_config,
    journal_lines,
    jsonl_bytes,
    prompts,
    python_process,
    questions,
    reply_tag,
    rows_of,
    settled,
    start_run,
    submitted_once,
    wait_for_journal,
    write_jsonl,
)
from support.transports import RecordingTransport, canned_message, no_wait
from support.waiting import wait_until, wait_until_async

__all__ = [
    "TEST_KEY",
    "RecordingTransport",
    "against",
    "assert_answers",
    "batch_config",
    "canned_message",
    "check_output",
    "job_config",
    "journal_lines",
    "jsonl_bytes",
    "no_wait",
    "prompts",
    "python_process",
    "questions",
    "reply_tag",
    "rows_of",
    "settled",
    "start_run",
    "submitted_once",
    "wait_for_journal",
    "wait_until",
    "wait_until_async",
    "write_jsonl",
]
