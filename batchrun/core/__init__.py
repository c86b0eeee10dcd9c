"""The ground floor, imported by every layer and importing none: the exception tree
(``errors``), a string that never shows itself (``secret``) and the scrubber that masks
credentials in any text and shows URLs without them (``scrub``), how messages name settings
and the input for the command line or for Python (``wording``), the optional extras and the
one error when one is missing (``extras``), compact JSON (``jsoncodec``),
RFC 3339 timestamps (``timestamps``), ``--deadline`` read as a moment (``deadline``), how
amounts read to people (``humanize``) and written files synced to disk (``disk``)."""
