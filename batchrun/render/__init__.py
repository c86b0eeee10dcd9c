"""All text and HTML for people: the run summary and validation report (``summary``), the
estimate (``estimate``), the report (``report``, ``report_html``), the batches table
(``batches``) and the answer cache's size and pruning (``answer_cache``). Nothing below this
layer formats prose for a reader."""
