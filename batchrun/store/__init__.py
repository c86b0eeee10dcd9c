"""Everything written to disk for a run: the output columns (``columns``), the journal
(``journal``) and its index for a quick resume (``journal_index``), the sink and the final
dataset (``sink``; its format is ``batchrun.formats``'), putting a final output in
place (``commit``), what a resume may trust (``resume``), the write-ahead journal of Message
Batches (``batch_journal``), the one row-state enum (``row_state``) and a run's scratch folder
(``scratch``)."""
