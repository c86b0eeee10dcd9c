"""The per-row pipeline, with no file, journal or signal concerns: a row prepared into a
request (``outcome.prepare``), admitted by the rate limits, sent with retries (``sender``),
turned into its outcome row (``outcome``), under a bounded pool (``pool``); identical requests
sent once (``dedup``, by the twins an online run finds before sending: ``twin_plan``); answers
of earlier jobs looked up and kept (``answer_cache``). ``Engine`` in ``engine`` puts them
together; every driver, the estimate's pilot and a notebook use it. Start reading at
``engine.Engine``."""
