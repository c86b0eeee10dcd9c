"""One input row at a time, pure: what a format's reader yields and what every reader shares
(``raw``; the readers themselves are ``batchrun.formats``'), the rows' common stage of ids
and duplicates (``reader``), compressed and encoded text (``compressed``, ``text``, ``shape``),
templates and request bodies with the rules the API would enforce (``request``), local media
files (``files``), structured output (``structured``) and the local token estimate
(``tokens``)."""
