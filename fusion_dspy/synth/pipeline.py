"""Generate a fused synthetic dataset (the paper's setting ii), resumably.

Layout of an output directory::

    manifest.json            configuration and its hash (a resume with another configuration is refused)
    draws.jsonl              the candidate store: teacher draws, re-used when a prompt is redone
    shards/shard-00000.jsonl finished records, one per line, fsync'ed (the checkpoint)
    dataset/                 datasets.Dataset.save_to_disk (Arrow), written when every prompt is done
    data.parquet, data.jsonl exports of the same rows
    sft.jsonl                chat-format SFT export (``output_format="chat"``)

A record is appended only when its prompt is completely done, in one write; a torn line from a
``kill -9`` is cut off when the shard is reopened. So a restarted run skips exactly the finished
prompts (nothing lost, nothing duplicated) and redoes the one in flight with its teacher draws
taken from the store (only the fusor is called again).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fusion_dspy.errors import FusionError
from fusion_dspy.evaluate.journal import Journal
from fusion_dspy.fuse import Fuse
from fusion_dspy.selectors.base import Selector
from fusion_dspy.store import JsonlStore
from fusion_dspy.synth.export import export_dataset
from fusion_dspy.synth.prompts import Prompt
from fusion_dspy.synth.record import build_record
from fusion_dspy.text_safety import one_line

__all__ = ["SynthResult", "config_hash", "synthesize"]

_logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SynthResult:
    """What a :func:`synthesize` call did.

    Attributes:
        out_dir: The output directory.
        total: Prompts in the run.
        generated: Records written by this call.
        resumed: Records found from earlier calls and skipped.
        failed: Prompt ids that failed in this call (retried by the next call).
        complete: Every prompt has a record (the dataset was exported).
        config_hash: Hash of the configuration that produced the records.
    """

    out_dir: Path
    total: int
    generated: int
    resumed: int
    failed: list[str]
    complete: bool
    config_hash: str


def _configuration(fuse: Fuse, also_select: Selector | None) -> dict[str, Any]:
    return {
        "signature": fuse.signature.signature,
        "generate_instructions": fuse.generate.signature.instructions,
        "fusor_instructions": fuse.fusor.signature.instructions,
        "settings": fuse.settings.model_dump(mode="json"),
        "teachers": [{"name": t.name, "temperature": t.temperature, "samples": t.samples,
                      "model": getattr(t.lm, "model", None)} for t in fuse.teachers],
        "fusor_model": getattr(fuse.fusor_lm, "model", None),
        "also_select": also_select.name if also_select is not None else None,
    }


def config_hash(configuration: dict[str, Any]) -> str:
    """A short stable hash of a run configuration (stored in every record)."""
    return hashlib.sha256(json.dumps(configuration, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _check_manifest(out: Path, configuration: dict[str, Any], digest: str) -> None:
    manifest = out / "manifest.json"
    if manifest.exists():
        previous = json.loads(manifest.read_text(encoding="utf-8"))
        if previous.get("config_hash") != digest:
            raise ValueError(
                f"{out} was generated with another configuration (hash {previous.get('config_hash')}, now {digest}). "
                "Resume with the same pool, fusor, prompt and N, or write to a new --out directory."
            )
        return
    tmp = manifest.with_suffix(".tmp")
    tmp.write_text(json.dumps({"config_hash": digest, "configuration": configuration}, indent=2), encoding="utf-8")
    os.replace(tmp, manifest)


def _finished(shards: Path) -> set[str]:
    done: set[str] = set()
    for path in sorted(shards.glob("shard-*.jsonl")):
        done.update(entry["id"] for entry in Journal(path))
    return done


def synthesize(
    fuse: Fuse,
    prompts: Sequence[Prompt],
    out_dir: str | os.PathLike[str],
    *,
    also_select: Selector | str | None = None,
    shard_size: int = 500,
    output_format: str = "records",
    progress: bool = True,
    export: bool = True,
) -> SynthResult:
    """Fuse every prompt's candidates and write the dataset; resumes a killed run in ``out_dir``.

    Args:
        fuse: The configured ``Fuse`` (pool, fusor, N, prompt). Its ``store`` is replaced by the run's
            ``draws.jsonl`` store unless it already has one.
        prompts: The work (:func:`~fusion_dspy.synth.prompts.load_prompts`).
        out_dir: The run directory (see the module docstring).
        also_select: Also record the Best-of-N pick of this selector over the *same* candidates
            (no new teacher calls), for FusioN-vs-BoN data comparisons.
        shard_size: Records per checkpoint shard.
        output_format: ``"records"``, or ``"chat"`` to also write ``sft.jsonl`` (messages lists).
        progress: Show a tqdm progress bar with ETA.
        export: Write the Arrow dataset and exports once every prompt is done.

    Returns:
        A :class:`SynthResult`.
    """
    from fusion_dspy.selectors import get_selector

    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}.")
    if output_format not in ("records", "chat"):
        raise ValueError(f"output_format must be 'records' or 'chat', got {output_format!r}.")
    selector = get_selector(also_select) if isinstance(also_select, str) else also_select
    out = Path(out_dir)
    shards = out / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    configuration = _configuration(fuse, selector)
    digest = config_hash(configuration)
    _check_manifest(out, configuration, digest)
    if fuse.store is None:
        fuse.store = JsonlStore(out / "draws.jsonl")

    done = _finished(shards)
    pending = [p for p in prompts if p.id not in done]
    resumed = len(prompts) - len(pending)
    if resumed:
        _logger.info("resuming: %d of %d prompts already done", resumed, len(prompts))
    journals: dict[int, Journal] = {}
    output_fields = tuple(fuse.signature.output_fields)
    mode = fuse.settings.mode
    failed: list[str] = []
    generated = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(prompts), initial=resumed, desc="synth", unit="prompt", dynamic_ncols=True)
    try:
        for prompt in pending:
            try:
                record = _one(fuse, prompt, selector, mode, output_fields, digest)
            except FusionError as error:
                _logger.warning("prompt %s failed (%s); it will be retried on the next run", prompt.id,
                                one_line(str(error)))
                failed.append(prompt.id)
                continue
            shard = prompt.index // shard_size
            if shard not in journals:
                journals[shard] = Journal(shards / f"shard-{shard:05d}.jsonl")
            journals[shard].append(record)
            generated += 1
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
        fuse.configure(mode=mode)
    complete = resumed + generated == len(prompts)
    if complete and export:
        export_dataset(out, output_format=output_format)
    elif not complete:
        _logger.warning("%d prompt(s) failed; run again to retry them, then the dataset is exported", len(failed))
    return SynthResult(out_dir=out, total=len(prompts), generated=generated, resumed=resumed, failed=failed,
                       complete=complete, config_hash=digest)


def _one(fuse: Fuse, prompt: Prompt, selector: Selector | None, mode: str, output_fields: tuple[str, ...],
         digest: str) -> dict[str, Any]:
    started = time.perf_counter()
    fuse.configure(mode=mode)
    fused = fuse(**prompt.inputs)
    selected = selection_report = None
    if selector is not None:
        fallback = fuse.selector  # also the fusor's fallback: restore it after the Best-of-N pick
        fuse.configure(mode="select", selector=selector)
        try:
            pick = fuse(**prompt.inputs)
        finally:
            fuse.configure(mode=mode, selector=fallback)
        selected = {name: pick[name] for name in output_fields}
        selection_report = pick.fusion
    record = build_record(
        prompt=prompt,
        output_fields=output_fields,
        fused={name: fused[name] for name in output_fields},
        report=fused.fusion,
        selected=selected,
        selection_report=selection_report,
        config_hash=digest,
    )
    _logger.debug("prompt %s done in %.2fs (path %s)", prompt.id, time.perf_counter() - started, fused.fusion.path)
    return record
