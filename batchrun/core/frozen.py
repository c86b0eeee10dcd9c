"""``@frozen``: a frozen dataclass as the type checker sees it, quick to make at run time.

A ``@dataclass(frozen=True)`` sets each field in ``__init__`` through ``object.__setattr__``
(its own ``__setattr__`` refuses): 0.6-0.7 us for eight fields against 0.12 us for a plain
dataclass on CPython 3.11. The classes made once or more for every row (an input row, its
request, its ``Work``, its batch item, the client's reply; the simulator's requests and
replies) are made about eight times a row via batches, so at 100,000 rows that was half a
second of a run's six.

``@frozen`` makes a plain dataclass that compares and hashes as a frozen one does, and tells
the type checker it is frozen (``dataclass_transform(frozen_default=True)``): assigning to a
field is a mypy error, which ``.ci/check`` runs with ``--strict``, instead of a run-time
``FrozenInstanceError``. Use it only where that speed is needed; ``@dataclass(frozen=True)``
everywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

T = TypeVar("T")

if TYPE_CHECKING:
    from typing_extensions import dataclass_transform
else:

    def dataclass_transform(**_: Any) -> Any:  # only the type checker reads it
        return lambda decorated: decorated


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def frozen(cls: type[T]) -> type[T]:
    """``cls`` as a dataclass that is frozen to the type checker (see the module doc)."""
    return dataclass(eq=True, unsafe_hash=True)(cls)
