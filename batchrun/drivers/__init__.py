"""Drivers compose the engine with a store: the online run (``online``), the Message Batches
run (``batches``, with ``batch_plan``, ``batch_results``, ``batch_admin``), what both do
around sending (``session``: credentials, resume check, the plan of rows left), the run's
``summary``, Ctrl-C handling (``interrupt``), the live display (``progress``) and
``validate``. ``job.run`` picks the driver a config asks for."""
