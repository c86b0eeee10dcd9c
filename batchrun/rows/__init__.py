"""One input row at a time, pure (no HTTP, no files written): input readers (``reader``),
templates and request bodies with the rules the API would enforce (``request``), local
media files (``files``), structured output (``structured``) and the local token estimate
(``tokens``)."""
