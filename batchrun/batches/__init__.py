"""Jobs through the Message Batches API (``--via batches``), half price, answers within 24 h:
the run (``run``: plan, create each batch once under a write-ahead journal, poll, collect),
how rows are cut into batches within the API's limits (``plan``), a result line into its
output row (``results``), and the ``batchrun batches list|cancel`` commands (``admin``).
``--via auto --deadline D`` (``auto``) runs the batch run under a deadline and finishes
online; the plan's arithmetic, the batch history and the budget's reserve are ``deadline``."""
