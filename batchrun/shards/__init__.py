"""One job split over many processes or machines by the hash of each row's id: a shard's
run into its own output, with the proof of what it ran, and ``batchrun merge``, which
checks every shard's proof and writes the job's output in input order (``run``)."""
