"""The limits themselves: requests, input tokens and output tokens per minute, per model.

The API limits each organisation per model in requests (RPM), input tokens (ITPM) and output
tokens (OTPM) per minute, with continuously refilled token buckets (docs/api-facts.md §7.1).
These are the plain values of those limits, as configured (``[limits]``,
``--rpm/--itpm/--otpm``) and as learned: no clock, no state. They live apart from the limiter so
that configuration loading, estimates and the run's tally can speak of limits without loading
the admission machinery.
"""

from __future__ import annotations

from dataclasses import dataclass, field

REQUESTS, INPUT, OUTPUT = 0, 1, 2
"""Indexes of the three dimensions in every (requests, input, output) triple of ``limits``,
as in :meth:`Limits.values`."""

WINDOW_S = 60.0
"""Limits are per minute; a bucket holds one minute's budget and refills it in this long."""


@dataclass(frozen=True)
class Limits:
    """Requests, input tokens and output tokens per minute; None where unknown or unlimited."""

    rpm: int | None = None
    itpm: int | None = None
    otpm: int | None = None

    def __post_init__(self) -> None:
        for name, value in zip(("rpm", "itpm", "otpm"), self.values(), strict=True):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{name} must be a whole number, not {value!r}")
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1, not {value}")

    def values(self) -> tuple[int | None, int | None, int | None]:
        return (self.rpm, self.itpm, self.otpm)

    @property
    def any(self) -> bool:
        return any(value is not None for value in self.values())

    def over(self, base: Limits) -> Limits:
        """These limits where set, ``base``'s where not."""
        mine, theirs = self.values(), base.values()
        return Limits(*(m if m is not None else t for m, t in zip(mine, theirs, strict=True)))


@dataclass(frozen=True)
class LimitsConfig:
    """Configured limits: ``default`` for every model, ``models`` for some, field by field.

    ``[limits] rpm = 1000`` with ``[limits."claude-haiku-4-5"] itpm = 50000`` gives haiku
    1,000 RPM and 50,000 ITPM. A model name also matches its dated snapshots
    (``claude-haiku-4-5`` covers ``claude-haiku-4-5-20251001``).
    """

    default: Limits = field(default_factory=Limits)
    models: tuple[tuple[str, Limits], ...] = ()

    def for_model(self, model: str) -> Limits:
        best: tuple[str, Limits] | None = None
        for name, limits in self.models:
            if (model == name or model.startswith(name + "-")) and (
                best is None or len(name) > len(best[0])
            ):
                best = (name, limits)
        return self.default if best is None else best[1].over(self.default)

    @property
    def any(self) -> bool:
        return self.default.any or any(limits.any for _, limits in self.models)


AUTO_MAX = 512
"""The most ``--concurrency auto`` ever chooses (and the size of the connection pool): a
value, so config can set it without loading the tuner."""
