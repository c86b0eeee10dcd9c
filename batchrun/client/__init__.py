"""HTTP only: credentials (``credentials``), the one ``MessagesClient`` (``messages``: httpx
over aiohttp) that turns every foreign failure into an ``ApiError``, response and stream
parsing (``response``), the retry policy and the one retry loop (``retry``), and the
Message Batches endpoints (``batch_endpoints``)."""
