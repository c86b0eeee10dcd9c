"""``batchrun report``: outputs (finished, partial, or still in their journal) folded into
totals, percentiles and per-minute counts (``totals``); ``render`` formats them."""
