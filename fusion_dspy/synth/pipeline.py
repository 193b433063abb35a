"""Generate a fused synthetic dataset (the paper's setting ii), resumably and concurrently.

Layout of an output directory::

    manifest.json            configuration and its hash (a resume with another configuration is refused)
    draws.jsonl              the candidate store: teacher draws, re-used when a prompt is redone
    shards/shard-00000.jsonl finished records, one per line, fsync'ed (the checkpoint)
    failed.jsonl             prompts that failed ``max_attempts`` times: id, attempts and the cause
    dataset/                 datasets.Dataset.save_to_disk (Arrow), written when every prompt is done: the
                             records of this call's prompts (a resume with another list leaves out the others)
    data.parquet, data.jsonl exports of the same rows
    sft.jsonl                chat-format SFT export (``output_format="chat"``)

A record is appended only when its prompt is completely done, in one write; a torn line from a
``kill -9`` is cut off when the shard is reopened. So a restarted run skips exactly the finished
prompts (nothing lost, nothing duplicated) and redoes the ones in flight with their teacher draws
taken from the store (only the fusor is called again). With ``concurrency=K`` up to K prompts are
in flight; records arrive in completion order and are written by one thread, so the guarantee is
the same (``read_records`` and the export put them back in prompt order).

A prompt that raises ``max_attempts`` times in a row (any error, e.g. every teacher failing, or
text that cannot be encoded) is written to ``failed.jsonl`` with its cause and the run moves on; a
resume treats it as done, ``retry_failed=True`` (``--retry-failed``) tries it again. A hard quota
or auth error (:func:`fusion_dspy.limits.stop_cause`) is different: the run stops starting prompts,
writes what is in flight, and returns ``stopped``; run again once the quota is back.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Iterable
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fusion_dspy.concurrency import bounded_map
from fusion_dspy.concurrency import check_concurrency
from fusion_dspy.fuse import Fuse
from fusion_dspy.hashing import stable_hash
from fusion_dspy.journal import Journal
from fusion_dspy.selectors.base import Selector
from fusion_dspy.store import JsonlStore
from fusion_dspy.synth.export import export_dataset
from fusion_dspy.synth.prompts import Prompt
from fusion_dspy.synth.worker import PromptWorker
from fusion_dspy.synth.worker import Work
from fusion_dspy.synth.worker import failure_row
from fusion_dspy.text_safety import one_line

__all__ = ["RunDirectory", "SynthResult", "check_options", "config_hash", "limiter_stats", "synthesize"]

_logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SynthResult:
    """What a :func:`synthesize` call did.

    Attributes:
        out_dir: The output directory.
        total: Prompts in the run.
        generated: Records written by this call.
        resumed: Records found from earlier calls and skipped.
        failed: Prompt ids written to ``failed.jsonl`` by this call.
        complete: Every prompt has a record or a failed row (the dataset was exported).
        config_hash: Hash of the configuration that produced the records.
        failed_total: Prompts of the run with a failed row and no record (this call's and earlier ones).
        stopped: Why the run stopped early (a hard quota or auth error), else ``None``.
        input_tokens: Input tokens of the records written by this call: the fused answers' and the
            ``also_select`` selector's own calls (a record's ``input_tokens`` + ``selector_input_tokens``).
        output_tokens: Output tokens of the records written by this call, counted the same way.
        elapsed_s: Wall time of this call.
        limits: Per limited LM (pool name): calls, DSPy's retries (custom engines), calls that ended
            rate-limited and seconds spent waiting for the client-side limits, since the LM was built.
    """

    out_dir: Path
    total: int
    generated: int
    resumed: int
    failed: list[str]
    complete: bool
    config_hash: str
    failed_total: int = 0
    stopped: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    elapsed_s: float = 0.0
    limits: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    @property
    def rows_per_s(self) -> float:
        return self.generated / self.elapsed_s if self.elapsed_s > 0 else 0.0


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
    return stable_hash(configuration, length=16)


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


def _failed_before(failures: Journal, done: set[str]) -> set[str]:
    return {entry["id"] for entry in failures} - done


def check_options(*, shard_size: int, output_format: str, max_attempts: int, concurrency: int | None = None) -> None:
    """Validate the options every synth path shares (a clear error naming the argument).

    ``concurrency`` is the local path's; the Ray path's is checked by :class:`~fusion_dspy.ray_options.RayOptions`.
    """
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"shard_size must be an int >= 1, got {shard_size!r}.")
    if output_format not in ("records", "chat"):
        raise ValueError(f"output_format must be 'records' or 'chat', got {output_format!r}.")
    if concurrency is not None:
        check_concurrency(concurrency)
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise ValueError(
            f"max_attempts must be an int >= 1 (tries per prompt before a failed row), got {max_attempts!r}."
        )


class RunDirectory:
    """A run's output directory and its single writer: the one place records and failed rows are written.

    Opening it checks the manifest (the configuration hash) and reads which prompts are done or
    failed; :meth:`pending` filters the prompts; :meth:`accept` writes each prompt's :class:`Work`;
    :meth:`finish` exports and summarises. The local and the Ray paths both go through it, so their
    directories are the same and either resumes the other.
    """

    def __init__(self, fuse: Fuse, selector: Selector | None, out_dir: str | os.PathLike[str], *, shard_size: int,
                 retry_failed: bool, total: int | None, progress: bool) -> None:
        self.out = Path(out_dir)
        self.shards = self.out / "shards"
        self.shards.mkdir(parents=True, exist_ok=True)
        configuration = _configuration(fuse, selector)
        self.digest = config_hash(configuration)
        _check_manifest(self.out, configuration, self.digest)
        self.shard_size = shard_size
        self.total = total
        self.started = time.monotonic()
        self.done = _finished(self.shards)
        self.failures = Journal(self.out / "failed.jsonl")
        failed_before = _failed_before(self.failures, self.done)
        self.skip = self.done if retry_failed else self.done | failed_before
        self.seen = self.resumed = self.generated = self.input_tokens = self.output_tokens = 0
        self.failed: list[str] = []
        self.written: set[str] = set()
        self.prompts: dict[str, int] = {}  # every prompt of this run, id -> index: what the export holds
        self.stopped: str | None = None
        self._journals: dict[int, Journal] = {}
        initial = len(self.skip) if total is None else min(total, len(self.skip))
        self.progress = progress
        self._bar = _progress_bar(total, initial, progress)

    def pending(self, prompts: Iterable[Prompt]) -> Iterator[Prompt]:
        """The prompts still to do, read lazily (finished ones, and failed ones unless retried, skipped)."""
        for prompt in prompts:
            self.seen += 1
            self.prompts[prompt.id] = prompt.index
            if prompt.id in self.skip:
                self.resumed += prompt.id in self.done
                continue
            yield prompt

    def accept(self, prompt: Prompt, result: Work) -> bool:
        """Write one prompt's outcome; ``False`` when it asks the run to stop (a hard quota)."""
        if result.stop is not None:
            if self.stopped is None:
                self.stopped = result.stop
                _logger.error("stopping: %s; the prompts in flight are finished, run again to resume", result.stop)
            return False
        if result.record is not None:
            record = result.record
            shard = record["index"] // self.shard_size
            if shard not in self._journals:
                self._journals[shard] = Journal(self.shards / f"shard-{shard:05d}.jsonl")
            self._journals[shard].append(record)
            self.generated += 1
            # A record written before the selector columns existed has none: .get.
            self.input_tokens += record["input_tokens"] + record.get("selector_input_tokens", 0)
            self.output_tokens += record["output_tokens"] + record.get("selector_output_tokens", 0)
            self.written.add(record["id"])
        else:
            failure = result.failure or failure_row(prompt, self.digest, 0, RuntimeError("no result"))
            self.failures.append(failure)
            self.failed.append(failure["id"])
            cause = one_line(f"{failure['error_type']}: {failure['error']}", 500)  # every line, on one
            _logger.warning("prompt %s failed %d time(s), written to failed.jsonl: %s", failure["id"],
                            failure["attempts"], cause)
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(failed=len(self.failed), tokens=self.input_tokens + self.output_tokens,
                                  refresh=False)
        return True

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def finish(self, *, export: bool, output_format: str, limits: dict[str, dict[str, Any]]) -> SynthResult:
        """Export when every prompt is done, and summarise the call."""
        self.close()
        failed_total = len(_failed_before(self.failures, self.done | self.written))
        complete = self.stopped is None  # else every prompt was read and has a record or a failed row
        if complete and export:
            if self.resumed + self.generated:
                export_dataset(self.out, output_format=output_format, prompts=self.prompts, progress=self.progress)
            if failed_total:
                _logger.warning("%d prompt(s) failed and are left out (see %s/failed.jsonl); run again with "
                                "retry_failed=True (--retry-failed) to try them again", failed_total, self.out)
        return SynthResult(out_dir=self.out, total=self.seen, generated=self.generated, resumed=self.resumed,
                           failed=self.failed, complete=complete, config_hash=self.digest,
                           failed_total=failed_total, stopped=self.stopped, input_tokens=self.input_tokens,
                           output_tokens=self.output_tokens, elapsed_s=time.monotonic() - self.started,
                           limits=limits)


def synthesize(
    fuse: Fuse,
    prompts: Iterable[Prompt],
    out_dir: str | os.PathLike[str],
    *,
    also_select: Selector | str | None = None,
    shard_size: int = 500,
    output_format: str = "records",
    progress: bool = True,
    export: bool = True,
    concurrency: int = 1,
    max_attempts: int = 3,
    retry_failed: bool = False,
    total: int | None = None,
) -> SynthResult:
    """Fuse every prompt's candidates and write the dataset; resumes a killed run in ``out_dir``.

    Args:
        fuse: The configured ``Fuse`` (pool, fusor, N, prompt). Its ``store`` is replaced by the run's
            ``draws.jsonl`` store unless it already has one. It is not re-configured (concurrent
            calls share it); the Best-of-N pick runs on a variant of it.
        prompts: The work (:func:`~fusion_dspy.synth.prompts.load_prompts`, or a stream from
            :func:`~fusion_dspy.synth.prompts.iter_prompts`: it is read as slots free up).
        out_dir: The run directory (see the module docstring).
        also_select: Also record the Best-of-N pick of this selector over the *same* candidates
            (no new teacher calls), for FusioN-vs-BoN data comparisons.
        shard_size: Records per checkpoint shard (by prompt index).
        output_format: ``"records"``, or ``"chat"`` to also write ``sft.jsonl`` (messages lists).
        progress: Show a tqdm progress bar (rows/s, ETA, failures and tokens so far).
        export: Write the Arrow dataset and exports once every prompt is done.
        concurrency: Prompts in flight at once (threads; each prompt's draws run in parallel too).
            Bound the providers with the LMs' ``limits`` (:mod:`fusion_dspy.limits`).
        max_attempts: Attempts per prompt in this call before it is written as a failed row.
        retry_failed: Try the prompts of ``failed.jsonl`` again.
        total: Number of prompts, for the progress bar's ETA when ``prompts`` has no ``len``.

    Returns:
        A :class:`SynthResult`.
    """
    from fusion_dspy.selectors import get_selector

    check_options(shard_size=shard_size, output_format=output_format, concurrency=concurrency,
                  max_attempts=max_attempts)
    selector = get_selector(also_select) if isinstance(also_select, str) else also_select
    if total is None and hasattr(prompts, "__len__"):
        total = len(prompts)  # type: ignore[arg-type]
    run = RunDirectory(fuse, selector, out_dir, shard_size=shard_size, retry_failed=retry_failed, total=total,
                       progress=progress)
    if fuse.store is None:
        fuse.store = JsonlStore(run.out / "draws.jsonl")
    worker = PromptWorker(fuse, selector, digest=run.digest, max_attempts=max_attempts)
    runs = bounded_map(worker, run.pending(prompts), concurrency=concurrency)
    try:
        for outcome in runs:
            result = outcome.value if outcome.error is None else Work(
                failure=failure_row(outcome.item, run.digest, max_attempts, outcome.error))
            if not run.accept(outcome.item, result):
                runs.stop()
    finally:
        run.close()
    return run.finish(export=export, output_format=output_format, limits=limiter_stats(fuse))


def limiter_stats(fuse: Fuse) -> dict[str, dict[str, Any]]:
    """Calls, retries, rate-limited calls and waiting time of the Fuse's limited LMs, by pool name."""
    lms = {teacher.name: teacher.lm for teacher in fuse.teachers}
    lms[fuse.settings.fusor] = fuse.fusor_lm
    stats = {}
    for name, lm in lms.items():
        limiter = getattr(lm, "limiter", None)
        if limiter is not None:
            stats[name] = {"calls": limiter.calls, "retries": limiter.retries, "rate_limited": limiter.rate_limited,
                           "waited_s": round(limiter.waited_s, 3)}
    return stats


def _progress_bar(total: int | None, initial: int, progress: bool) -> Any:
    if not progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="synth", unit="row", dynamic_ncols=True, smoothing=0.05)
