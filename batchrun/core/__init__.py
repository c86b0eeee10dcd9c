"""The ground floor, imported by every layer and importing none: the exception tree
(``errors``), a string that never shows itself (``secret``) and the scrubber that masks
credentials in any text (``scrub``), compact JSON (``jsoncodec``),
RFC 3339 timestamps (``timestamps``) and how amounts read to people (``humanize``)."""
