"""All text and HTML for people: the run summary and validation report (``summary``), the
estimate (``estimate``), the report (``report``, ``report_html``) and the batches table
(``batches``). Nothing below this layer formats prose for a reader."""
