"""Rate limits on the client side: pacing a run to the API's RPM / ITPM / OTPM per model.

* ``values``: the limits as plain values (``Limits``, ``LimitsConfig``), the dimension
  indexes and the one-minute window.
* ``headers``: the ``anthropic-ratelimit-*`` response headers, read (``parse_rate_limit_headers``).
* ``usage``: what the API counts toward the limits for a reply or a failed attempt.
* ``buckets``: the continuously refilled token bucket.
* ``congestion``: what a 429 or a 529 storm says (bucket empty, or slow down) and the AIMD
  concurrency window that slows a model down in proportion; pure.
* ``limiter``: admission (``RateLimiter``): queues, reservations, settling, 429 pauses.
* ``tuner``: ``--concurrency auto`` (``ConcurrencyTuner``), by Little's law.

The simulator's limits (``batchrun.simulator.ratelimits``) are separate code on purpose: a
stand-in that shared this arithmetic could not catch its mistakes.
"""
