"""Where a job's shards live beside its output, local or on object storage, and the error of a
merge that cannot be made: what ``shards.run`` and ``shards.remote`` both name."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from batchrun.config.load import MAX_SHARDS
from batchrun.core.errors import OutputError
from batchrun.core.wording import said
from batchrun.formats.registry import folder_output, output_by_suffix, output_named

SHARDS_SUFFIX = ".shards"  # after the output's name: the folder of its shards
PROOF_SUFFIX = ".shard.json"  # after a shard file's name: its proof
_SHARD_FOLDER = re.compile(r"([0-9]+)-of-([0-9]+)")


class ShardError(OutputError):
    """The shards cannot be merged: some row is missing, doubled, or in an unfinished shard,
    or a shard is of another job or input, or its file is torn."""


def shards_folder(output: Path) -> Path:
    """Where the shards of ``output`` live: ``out/labels.parquet.shards``."""
    return output.with_name(output.name + SHARDS_SUFFIX)


def shard_output(output: Path, index: int, count: int) -> Path:
    """Shard ``index`` of ``count``'s own output:
    ``out/labels.parquet.shards/2-of-4/labels.parquet``."""
    name = output.name
    if output_by_suffix(output) is None:
        # A folder (by its name alone: the same before and after it is written): its shards
        # are single files of its parts' format (Parquet), merged into the folder.
        parts = folder_output().parts
        name += output_named(parts).suffixes[0] if parts else ""
    return shards_folder(output) / f"{index}-of-{count}" / name


def shard_url(output_url: str, name: str, index: int, count: int) -> str:
    """Shard ``index`` of ``count``'s own output on object storage, laid out as a local
    shard's: ``s3://b/out/labels.parquet.shards/2-of-4/labels.parquet`` (``name`` is its
    local file's, ``shard_output``; a folder output's shards sit beside the folder)."""
    return f"{output_url.rstrip('/')}{SHARDS_SUFFIX}/{index}-of-{count}/{name}"


def proof_path(shard_file: Path) -> Path:
    """The proof beside a shard's file: ``.../2-of-4/labels.parquet.shard.json``."""
    return shard_file.with_name(shard_file.name + PROOF_SUFFIX)


def shard_count_of(names: Iterable[str], where: str, output: str) -> int:
    """N, from the names of the entries of the shards' folder ``where`` (those that are not
    ``I-of-N`` are no shards); ShardError when none is, or they are of several Ns."""
    counts = {int(found.group(2)) for found in map(_SHARD_FOLDER.fullmatch, names) if found}
    if not counts:
        raise ShardError(
            f"no shards of {output}: {where} has no I-of-N folder. Run the job with "
            f"{said('`--shard I/N`', '`run_shard(config, I, N)`')} for each I first"
        )
    if len(counts) > 1:
        shown = ", ".join(f"{n}" for n in sorted(counts))
        raise ShardError(
            f"{where} holds shards of different counts (N = {shown}): remove the folders "
            "of the split you do not want"
        )
    count = counts.pop()
    if count > MAX_SHARDS:
        raise ShardError(
            f"{where} holds shards of {count:,} (the folders *-of-{count}): batchrun splits "
            f"a job into at most {MAX_SHARDS:,} shards, so these are none of its runs. Remove "
            "them"
        )
    return count


def unfinished(shown: str, problems: Iterable[str], count: int) -> ShardError:
    """The error of a merge whose shards are not all finished: which, and how to finish them."""
    return ShardError(
        f"cannot merge the shards of {shown}: {'; '.join(problems)}. Run (or re-run) "
        + said(f"`batchrun run JOB --shard I/{count}`", f"`run_shard(config, I, {count})`")
        + " for each, then merge"
    )
