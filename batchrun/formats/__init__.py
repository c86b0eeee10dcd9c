"""The formats batchrun reads and writes, each one object (``base.InputFormat``,
``base.OutputFormat``), and the registry that finds them (``registry``).

Every module of this package whose name does not start with ``_`` is looked at, and the
formats its ``FORMATS`` lists are the ones batchrun knows (``jsonl``: JSON lines in and
out, ``parquet_dataset``: a folder of Parquet parts out, ...): adding a format is adding a
module, and its tests. Every caller asks the registry (``registry.input_named``,
``output_for``, ``sniff_format`` ...), never ``if kind == "csv"``; the settings table's
choices (``--format``, ``--output-format``) and the help texts come from it too.

The modules without formats are what the formats share: ``base``, ``registry``, ``marks``
(a partial output's mark), ``inputs`` (an input file read through its format:
``read_rows``), ``spool`` (standard input copied to a file). No module here imports Arrow at
its top: ``batchrun --help`` lists the formats.
"""
