"""One input row at a time, pure (no HTTP; the one file written is standard input's copy,
``spool``): input readers (``reader``, ``formats``, ``compressed``, ``text``, ``shape``),
templates and request bodies with the rules the API would enforce (``request``), local media
files (``files``), structured output (``structured``) and the local token estimate
(``tokens``)."""
