"""What the live display says, as pure functions of a ``Snapshot``: no terminal, no clock.

A driver hands ``Progress`` a callable that returns a ``Snapshot`` of its counts; this module
turns one into lines. ``frame`` gives the few lines a terminal redraws in place, each cut to
the width it is given; ``plain_line`` the one line a log gets every few seconds. ``Rates``
measures rows, tokens and dollars per unit of time over a recent window, so the ETA follows
the pace of the last minute rather than the average since the start.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from batchrun.core.humanize import money

RATE_WINDOW_S = 60.0  # the pace of the last minute: long enough to smooth bursts of answers
MAX_BATCH_LINES = 4  # more running batches than this are shown as one summary line
_GAP = "  "
_BAR_MIN = 10
_BAR_MAX = 30


@dataclass(frozen=True)
class BatchView:
    """One Message Batch as the API last reported it."""

    id: str
    state: str  # the API's processing_status: in_progress, canceling, ended
    counts: Mapping[str, int]  # the API's request_counts

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def finished(self) -> int:
        return self.total - self.counts.get("processing", 0)


@dataclass(frozen=True)
class Snapshot:
    """A driver's counts at one moment; None where a driver does not know (or has no) such
    figure, and the display leaves it out."""

    done: int  # rows finished, each counted once
    total: int | None  # rows the run set out to do, when known
    in_flight: int | None = None
    ok: int | None = None
    error: int | None = None
    retries: int | None = None
    rate_limited_429s: int | None = None
    rate_wait_s: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None
    projected_cost: float | None = None
    budget: float | None = None
    batches: Sequence[BatchView] = ()  # the batches still running (not yet collected)
    batches_collected: int | None = None
    note: str | None = None  # a driver's own words, shown as they are
    deadline_left_s: float | None = None  # --via auto: seconds to the deadline (< 0: past)


@dataclass(frozen=True)
class Pace:
    """Per-second rates over the recent window; None until two moments are known."""

    rows: float | None = None
    input_tokens: float | None = None
    output_tokens: float | None = None
    cost_usd: float | None = None


@dataclass
class Rates:
    """Samples of the counts over the last ``window`` seconds, for rates and the ETA."""

    window: float = RATE_WINDOW_S
    _samples: deque[tuple[float, Snapshot]] = field(default_factory=deque)

    def add(self, now: float, snapshot: Snapshot) -> Pace:
        """Record ``snapshot`` taken at ``now`` and return the pace since the window's start."""
        self._samples.append((now, snapshot))
        # Keep one sample older than the window, so the window is always spanned in full.
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()
        first_at, first = self._samples[0]
        span = now - first_at
        if span <= 0:
            return Pace()

        def per_s(now_value: float | None, then_value: float | None) -> float | None:
            if now_value is None or then_value is None:
                return None
            return max(0.0, now_value - then_value) / span

        return Pace(
            rows=per_s(snapshot.done, first.done),
            input_tokens=per_s(snapshot.input_tokens, first.input_tokens),
            output_tokens=per_s(snapshot.output_tokens, first.output_tokens),
            cost_usd=per_s(snapshot.cost_usd, first.cost_usd),
        )


def eta_s(snapshot: Snapshot, pace: Pace) -> float | None:
    """Seconds left at the recent pace; None when there is no total or no recent pace."""
    if snapshot.total is None or not pace.rows:
        return None
    return max(0, snapshot.total - snapshot.done) / pace.rows


def frame(snapshot: Snapshot, pace: Pace, elapsed_s: float, width: int) -> list[str]:
    """The lines a terminal shows, each at most ``width - 1`` characters (a line that
    reaches the last column makes some terminals wrap, and the redraw lose its place)."""
    room = max(width - 1, 1)
    lines = [_rows_line(snapshot, pace, elapsed_s, room)]
    lines.extend(_wrap(_requests_fields(snapshot), room))
    lines.extend(_wrap(_money_fields(snapshot, pace), room))
    lines.extend(_fit(fields, room) for fields in _batch_fields(snapshot))
    if snapshot.note:
        lines.append(_fit([snapshot.note], room))
    return [line for line in lines if line]


def plain_line(snapshot: Snapshot, pace: Pace, elapsed_s: float) -> str:
    """One greppable line for a log: the same figures as ``frame``, as ``key=value``."""
    parts = [f"batchrun: {_done_of(snapshot)} rows"]
    if pace.rows is not None:
        parts.append(f"{pace.rows:.1f} rows/s")
    parts.append(f"elapsed {clock_text(elapsed_s)}")
    if snapshot.deadline_left_s is not None:
        parts.append(_deadline_text(snapshot.deadline_left_s))
    eta = eta_s(snapshot, pace)
    if eta is not None:
        parts.append(f"ETA {clock_text(eta)}")
    counts = [
        f"{name}={value}"
        for name, value in (
            ("in_flight", snapshot.in_flight),
            ("ok", snapshot.ok),
            ("err", snapshot.error),
            ("retries", snapshot.retries),
            ("429s", snapshot.rate_limited_429s),
        )
        if value is not None
    ]
    if snapshot.rate_wait_s is not None:
        counts.append(f"rl_wait={snapshot.rate_wait_s:.0f}s")
    if snapshot.input_tokens is not None and snapshot.output_tokens is not None:
        counts.append(f"tok_in={snapshot.input_tokens} tok_out={snapshot.output_tokens}")
    if snapshot.batches:
        processing = sum(b.counts.get("processing", 0) for b in snapshot.batches)
        counts.append(f"batches_running={len(snapshot.batches)} processing={processing}")
    if snapshot.batches_collected is not None:
        counts.append(f"batches_collected={snapshot.batches_collected}")
    line = ", ".join(parts)
    if counts:
        line += "; " + " ".join(counts)
    cost = cost_text(snapshot)
    if cost:
        line += ";" + cost
    if snapshot.note:
        line += "; " + snapshot.note
    return line


def cost_text(snapshot: Snapshot) -> str:
    """`` cost=$… proj=$… max=$…``: spent, projected if the rest costs alike, the budget."""
    if snapshot.cost_usd is None:
        return ""
    text = f" cost=${snapshot.cost_usd:.4f}"
    if snapshot.projected_cost is not None:
        text += f" proj=${snapshot.projected_cost:.4f}"
    if snapshot.budget is not None:
        text += f" max=${snapshot.budget:g}"
    return text


def _deadline_text(left_s: float) -> str:
    """``deadline in 0:42``, or ``deadline passed 0:05 ago``."""
    if left_s >= 0:
        return f"deadline in {clock_text(left_s)}"
    return f"deadline passed {clock_text(-left_s)} ago"


def clock_text(seconds: float) -> str:
    """``m:ss`` or ``h:mm:ss``, as a stopwatch reads."""
    whole = int(max(seconds, 0))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def compact(value: float) -> str:
    """12, 1.2k, 12.3k, 1.2M: a count that stays short as it grows."""
    if value < 1000:
        return f"{value:.0f}"
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.1f}{unit}"
    return f"{value:.0f}"  # pragma: no cover - the loop always returns for value >= 1000


# -- the lines ------------------------------------------------------------------------------


def _done_of(snapshot: Snapshot) -> str:
    if snapshot.total is None:
        return f"{snapshot.done:,}"
    return f"{snapshot.done:,}/{snapshot.total:,}"


def _rows_line(snapshot: Snapshot, pace: Pace, elapsed_s: float, room: int) -> str:
    """``[####----]  45%  9/20 rows  0.5 rows/s  ETA 0:22  elapsed 0:21``; the bar takes
    what room the figures leave and goes first on a narrow terminal, then elapsed."""
    fields = [f"{_done_of(snapshot)} rows"]
    if pace.rows is not None:
        fields.append(f"{pace.rows:.1f} rows/s" if pace.rows < 100 else f"{pace.rows:,.0f} rows/s")
    if snapshot.total is not None:
        eta = eta_s(snapshot, pace)
        fields.append(f"ETA {clock_text(eta)}" if eta is not None else "ETA ?")
    fields.append(f"elapsed {clock_text(elapsed_s)}")
    if snapshot.deadline_left_s is not None:
        fields.append(_deadline_text(snapshot.deadline_left_s))
    if snapshot.total is not None:
        share = min(snapshot.done / snapshot.total, 1.0) if snapshot.total else 1.0
        fields.insert(0, f"{share * 100:3.0f}%")
        # A width that depends on the terminal only, so the bar does not twitch as the
        # figures beside it grow; left out when they leave no room for it.
        cells = min(room // 4, _BAR_MAX)
        if cells >= _BAR_MIN and len(_GAP.join(fields)) + len(_GAP) + cells + 2 <= room:
            filled = int(share * cells)
            fields.insert(0, "[" + "#" * filled + "-" * (cells - filled) + "]")
    return _fit(fields, room)


def _requests_fields(snapshot: Snapshot) -> list[str]:
    fields = []
    for label, value in (
        ("in flight", snapshot.in_flight),
        ("ok", snapshot.ok),
        ("error", snapshot.error),
        ("retries", snapshot.retries),
        ("429s", snapshot.rate_limited_429s),
    ):
        if value is not None:
            fields.append(f"{label} {value:,}")
    if snapshot.rate_wait_s is not None:
        fields.append(f"rate-limit wait {clock_text(snapshot.rate_wait_s)}")
    if snapshot.batches or snapshot.batches_collected is not None:
        running = len(snapshot.batches)
        fields.append(f"batches {running:,} running, {snapshot.batches_collected or 0:,} collected")
    return fields


def _money_fields(snapshot: Snapshot, pace: Pace) -> list[str]:
    """Spent, its pace, where it is heading and the budget first: they matter most when the
    terminal is narrow; tokens per minute after them."""
    fields = []
    if snapshot.cost_usd is not None:
        spent = f"spent {money(snapshot.cost_usd)}"
        if snapshot.budget is not None:
            spent += f" of ${snapshot.budget:,g} budget"
        fields.append(spent)
        if pace.cost_usd is not None:
            fields.append(f"{money(pace.cost_usd * 60)}/min")
        if snapshot.projected_cost is not None:
            fields.append(f"projected {money(snapshot.projected_cost)}")
    if pace.input_tokens is not None and pace.output_tokens is not None:
        per_min_in, per_min_out = compact(pace.input_tokens * 60), compact(pace.output_tokens * 60)
        fields.append(f"tokens/min in {per_min_in} out {per_min_out}")
    return fields


def _batch_fields(snapshot: Snapshot) -> list[list[str]]:
    """One line per running batch; past ``MAX_BATCH_LINES``, the rest folded into one."""
    running = list(snapshot.batches)
    shown = running if len(running) <= MAX_BATCH_LINES else running[: MAX_BATCH_LINES - 1]
    lines = [_one_batch(b) for b in shown]
    rest = running[len(shown) :]
    if rest:
        states: dict[str, int] = {}
        for b in rest:
            states[b.state] = states.get(b.state, 0) + 1
        finished = sum(b.finished for b in rest)
        total = sum(b.total for b in rest)
        lines.append(
            [
                f"  ... {len(rest):,} more batches",
                ", ".join(f"{n:,} {state}" for state, n in sorted(states.items())),
                f"{finished:,}/{total:,} rows",
            ]
        )
    return lines


def _one_batch(batch: BatchView) -> list[str]:
    counts = ", ".join(f"{name} {n:,}" for name, n in batch.counts.items() if n)
    return [
        f"  {batch.id}",
        batch.state,
        f"{batch.finished:,}/{batch.total:,} rows",
        *([counts] if counts else []),
    ]


def _wrap(fields: Sequence[str], room: int, max_lines: int = 2) -> list[str]:
    """The fields packed into at most ``max_lines`` lines of ``room``: a narrow terminal gets
    a line more rather than losing figures; past that, the last fields are dropped."""
    lines: list[list[str]] = []
    for text in fields:
        if lines and len(_GAP.join([*lines[-1], text])) <= room:
            lines[-1].append(text)
        elif len(lines) < max_lines:
            lines.append([text])
        else:
            break
    return [_fit(line, room) for line in lines]


def _fit(fields: Sequence[str], room: int) -> str:
    """The fields joined, dropping whole fields from the end until the line fits ``room``;
    a first field too long on its own is cut."""
    kept = list(fields)
    while len(kept) > 1 and len(_GAP.join(kept)) > room:
        kept.pop()
    line = _GAP.join(kept)
    return line if len(line) <= room else line[: max(room - 3, 0)] + "..."[:room]
