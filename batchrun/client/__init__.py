"""HTTP only: credentials, the one ``MessagesClient`` (httpx over aiohttp) that turns every
foreign failure into an ``ApiError``, response and stream parsing (``response``), the retry
policy and the one retry loop (``retry``), and the Message Batches endpoints (``batches``)."""
