"""A credential that cannot leak by accident through repr, str, logs or tracebacks."""

from __future__ import annotations


class Secret:
    """Holds a credential; only ``reveal()`` gives the value, and only the client calls it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self) -> tuple[object, ...]:
        # Pickling would write the key to disk or across processes in clear.
        raise TypeError("a Secret cannot be pickled")
