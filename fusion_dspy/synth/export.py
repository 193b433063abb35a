"""Turn a run's checkpoint shards into a ``datasets.Dataset`` (Arrow) plus Parquet, JSONL and SFT exports."""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fusion_dspy.journal import Journal
from fusion_dspy.synth.record import to_chat

__all__ = ["export_dataset", "read_records"]

_logger = logging.getLogger(__name__)


def read_records(out_dir: str | os.PathLike[str], *, prompts: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    """Every finished record of a run, in prompt order, each id once (the first record wins).

    Args:
        out_dir: The run directory.
        prompts: This run's prompts, ``{id: index}``: only their records are kept, each with its ``index`` in
            this run. The shards keep the records of every call in the directory, also of prompts a later call
            no longer lists (a resume with another prompt list); those are left out, and counted in a log line.
    """
    records: dict[str, dict[str, Any]] = {}
    for path in sorted((Path(out_dir) / "shards").glob("shard-*.jsonl")):
        for entry in Journal(path):
            if entry["id"] in records:
                _logger.warning("%s: duplicate record for prompt %s ignored", path, entry["id"])
                continue
            records[entry["id"]] = entry
    if prompts is not None:
        stale = len(records)
        records = {id_: {**record, "index": prompts[id_]} for id_, record in records.items() if id_ in prompts}
        stale -= len(records)
        if stale:
            _logger.info("%s: %d record(s) of prompts not in this run left out", out_dir, stale)
    return sorted(records.values(), key=lambda record: record["index"])


def export_dataset(out_dir: str | os.PathLike[str], *, output_format: str = "records",
                   prompts: Mapping[str, int] | None = None, progress: bool = True) -> Any:
    """Write ``dataset/`` (``save_to_disk``), ``data.parquet``, ``data.jsonl`` and, for ``output_format="chat"``,
    ``sft.jsonl``; returns the ``datasets.Dataset``. ``prompts`` (``{id: index}``): export only the records of
    these prompts (see :func:`read_records`); ``None``: every record in the directory. ``progress=False``
    silences the ``datasets`` library's own progress bars while it writes (saving, parquet, JSON).

    The Arrow directory is written next to the old one and swapped in, so a kill during export never
    leaves a half-written dataset behind (the shards stay the source of truth; export again).
    """
    import datasets

    if not progress and datasets.is_progress_bar_enabled():
        datasets.disable_progress_bars()
        try:
            return export_dataset(out_dir, output_format=output_format, prompts=prompts, progress=False)
        finally:
            datasets.enable_progress_bars()
    out = Path(out_dir)
    records = read_records(out, prompts=prompts)
    if not records:
        raise ValueError(f"{out} has no finished records to export.")
    # One schema for every row: a record from an older version may lack a newer column (e.g. ``selector_calls``),
    # and ``from_list`` takes the columns of the first row.
    columns = dict.fromkeys(key for record in records for key in record)
    dataset = datasets.Dataset.from_list([{key: record.get(key) for key in columns} for record in records])
    staging = out / "dataset.tmp"
    if staging.exists():
        shutil.rmtree(staging)
    dataset.save_to_disk(str(staging))
    final = out / "dataset"
    if final.exists():
        shutil.rmtree(final)
    os.replace(staging, final)
    dataset.to_parquet(str(out / "data.parquet"))
    dataset.to_json(str(out / "data.jsonl"), force_ascii=False)
    if output_format == "chat":
        with (out / "sft.jsonl").open("w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(to_chat(record), ensure_ascii=False) + "\n")
    _logger.info("exported %d records to %s", len(records), out)
    return dataset
