"""What ``batchrun.run`` returns, whatever it was given: one ``RunResult``.

It holds the run's ``summary`` (``runs.summary.RunSummary``: counts, tokens, cost, how the
run ended), its ``exit_code`` (as the command line's), the output as a pyarrow ``table``, and
``to_dict()``: the summary as JSON values, the very object ``batchrun run --json`` prints and
``batchrun.summary_of(table)`` reads back from a table's metadata. The summary's fields are
also read straight off the result (``result.ok``, ``result.cost_usd``, ``result.final``).

    result = batchrun.run(rows, model="claude-haiku-4-5", max_tokens=5, simulate=True)
    result.table["text"]; result.exit_code; result.to_dict()["cost_usd"]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from batchrun.config.load import RunConfig
from batchrun.runs.summary import RunSummary

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass
class RunResult:
    """A run's outcome: its summary, its exit code, its output (see the module's docstring)."""

    summary: RunSummary
    config: RunConfig
    _table: pa.Table | None = field(default=None, repr=False)
    _dict: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def exit_code(self) -> int:
        """0 every row ok; 3 some rows in error; 4 stopped by the budget (as the CLI's)."""
        return self.summary.exit_code

    @property
    def table(self) -> pa.Table:
        """The output as one Table, in input order, the summary in its schema metadata
        (``summary_of``): the rows given from memory, or the output file as it stands (a
        stopped run's partial file holds the rows it finished; none written: no rows)."""
        if self._table is None:
            from batchrun.public.frames import output_table

            self._table = output_table(self.config, self.summary, self.to_dict())
        return self._table

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON values: ``batchrun run --json``'s object."""
        if self._dict is None:
            from batchrun.render.summary import summary_dict

            self._dict = summary_dict(self.summary, self.config)
        return dict(self._dict)

    def __getattr__(self, name: str) -> Any:
        # The summary's fields, read off the result: result.ok, result.final, result.skipped.
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.summary, name)
