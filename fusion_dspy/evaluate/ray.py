"""The evaluation harness over Ray Data: examples mapped over an actor pool, one journal on the driver.

Each actor builds the harness (its Fuse, LMs, metric and examples) once with ``build_harness`` and
evaluates batches of examples with ``concurrency`` threads; the journal entries come back to the
driver, which appends them to its ``results.jsonl``. So a Ray run resumes like a local one (either
kind resumes the other) and writes the same report. Install with ``pip install 'fusion-dspy[ray]'``.

Example:
    >>> from fusion_dspy.evaluate.ray import run_harness_ray
    >>> report = run_harness_ray(make_harness, "runs/x", actors=4, concurrency=8, address="auto")
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fusion_dspy.evaluate.harness import Harness
from fusion_dspy.evaluate.harness import example_id
from fusion_dspy.evaluate.report import EvalReport

__all__ = ["run_harness_ray"]


class _EvalActor:
    """A Ray Data actor: a harness of its own (scratch ``out_dir``) whose journal entries are returned."""

    def __init__(self, *, build_harness: Callable[[str], Harness], fingerprint: str, examples: int,
                 concurrency: int) -> None:
        self.harness = build_harness(tempfile.mkdtemp(prefix="fusion-eval-actor-"))
        if self.harness.fingerprint != fingerprint or len(self.harness.examples) != examples:
            raise ValueError(
                f"this Ray worker builds another harness (fingerprint {self.harness.fingerprint}, "
                f"{len(self.harness.examples)} examples; driver {fingerprint}, {examples}): install the same "
                "fusion-dspy version, data and pool config on every node."
            )
        self.concurrency = concurrency
        self._lock = threading.Lock()

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        from fusion_dspy.concurrency import bounded_map

        entries: list[dict[str, Any]] = []

        def sink(entry: dict[str, Any]) -> None:
            with self._lock:
                entries.append(entry)

        self.harness._sink = sink
        items = [(int(position), json.loads(str(done))) for position, done in
                 zip(batch["position"], batch["done_json"], strict=True)]

        def work(item: tuple[int, list[Any]]) -> None:
            position, done = item
            example = self.harness.examples[position]
            self.harness._run_example(example, example_id(example), {(k[0], k[1]): k[2] for k in done})

        for outcome in bounded_map(work, items, concurrency=min(self.concurrency, len(items))):
            if outcome.error is not None:
                raise outcome.error
        return {"entries_json": [json.dumps(entries, ensure_ascii=False, default=str)], "examples": [len(items)]}


def run_harness_ray(
    build_harness: Callable[[str], Harness],
    out_dir: str | os.PathLike[str],
    *,
    address: str | None = None,
    actors: int = 2,
    concurrency: int = 8,
    batch_size: int | None = None,
    actor_cpus: float = 1.0,
) -> EvalReport:
    """:meth:`Harness.run` on a Ray cluster (or a local Ray runtime); returns the report.

    Args:
        build_harness: ``build_harness(out_dir) -> Harness``: builds the harness (Fuse, LMs, metric,
            examples in a fixed order) for a given output directory. It runs on the driver with
            ``out_dir`` and in every actor with a scratch directory, so it must be picklable (a
            module-level function or a ``functools.partial`` of one).
        out_dir: The driver's run directory (journal and reports).
        address: Ray address (``None``: the running runtime or a new local one; ``"auto"``; ``"ray://..."``).
        actors: Actors in the pool. ``concurrency``: examples in flight per actor.
        batch_size: Examples per batch handed to an actor (default: ``concurrency``).
        actor_cpus: CPUs Ray reserves per actor.
    """
    from fusion_dspy.concurrency import check_concurrency
    from fusion_dspy.synth.ray import _ray

    check_concurrency(actors, name="actors")
    check_concurrency(concurrency)
    ray = _ray()
    harness = build_harness(str(Path(out_dir)))
    done = harness._done()
    items = [
        {"position": position,
         "done_json": json.dumps([[k[0], k[1], v] for k, v in done.get(example_id(example), {}).items()])}
        for position, example in enumerate(harness.examples)
    ]
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    dataset = ray.data.from_items(items).map_batches(
        _EvalActor,
        fn_constructor_kwargs={"build_harness": build_harness, "fingerprint": harness.fingerprint,
                               "examples": len(harness.examples), "concurrency": concurrency},
        batch_size=batch_size or concurrency,
        batch_format="numpy",
        concurrency=actors,
        num_cpus=actor_cpus,
    )
    bar = harness._bar(len(items))
    try:
        for row in dataset.iter_rows():
            entries = json.loads(str(row["entries_json"]))
            for entry in entries:
                harness.journal.append(entry)
            if bar is not None:
                bar.update(int(row["examples"]))
    finally:
        if bar is not None:
            bar.close()
    return harness.report()
