"""``batchrun estimate``: a job's tokens, cost and time before it is paid for. The entry
point and its passes (``estimate``), the figures it returns (``figures``), how long the
rest would take (``duration``), how each figure was made (``notes``), the cache writes,
reads and duplicates the run would make (``caching``), the paced ``count_tokens``
counter (``counter``), and the cost range of ``--via auto --deadline`` (``deadline``)."""
