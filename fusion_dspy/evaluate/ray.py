"""The evaluation harness over Ray Data: examples mapped over an actor pool, one journal on the driver.

Each actor builds the harness (its Fuse, LMs, metric and examples) once with ``build_harness`` and
evaluates batches of examples with ``concurrency`` threads; the journal entries come back to the
driver, which appends them to its ``results.jsonl``. So a Ray run resumes like a local one (either
kind resumes the other) and writes the same report. The pool (address, actors, examples in flight
per actor, batch size, CPUs per actor) is a :class:`~fusion_dspy.ray_options.RayOptions`. Install
with ``pip install 'ray[data]>=2.60,<3'`` (the ``[ray]`` extra).

Example:
    >>> from fusion_dspy.evaluate.ray import RayOptions, run_harness_ray
    >>> report = run_harness_ray(make_harness, "runs/x", ray=RayOptions(address="auto", actors=4, concurrency=8))
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fusion_dspy.evaluate.harness import Harness
from fusion_dspy.evaluate.harness import example_ids
from fusion_dspy.evaluate.report import EvalReport
from fusion_dspy.ray_options import RayOptions

__all__ = ["RayOptions", "run_harness_ray"]


class _EvalActor:
    """A Ray Data actor: a harness of its own (scratch ``out_dir``) whose journal entries are returned."""

    def __init__(self, *, build_harness: Callable[[str], Harness], fingerprint: str, examples: Sequence[str],
                 concurrency: int) -> None:
        """``examples``: the driver's example ids, in its order (the batches give positions in that list)."""
        self.harness = build_harness(tempfile.mkdtemp(prefix="fusion-eval-actor-"))
        self._ids = example_ids(self.harness.examples)
        if self.harness.fingerprint != fingerprint or self._ids != list(examples):
            same = sum(mine == theirs for mine, theirs in zip(self._ids, examples, strict=False))
            raise ValueError(
                f"this Ray worker builds another harness (fingerprint {self.harness.fingerprint}, "
                f"{len(self._ids)} examples; driver {fingerprint}, {len(examples)} examples; {same} at the same "
                "position): install the same fusion-dspy version, data (in the same order) and pool config on "
                "every node."
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
            self.harness._run_example(example, self._ids[position], {(k[0], k[1]): k[2] for k in done})

        for outcome in bounded_map(work, items, concurrency=min(self.concurrency, len(items))):
            if outcome.error is not None:
                raise outcome.error
        return {"entries_json": [json.dumps(entries, ensure_ascii=False, default=str)], "examples": [len(items)]}


def run_harness_ray(
    build_harness: Callable[[str], Harness],
    out_dir: str | os.PathLike[str],
    *,
    ray: RayOptions | None = None,
) -> EvalReport:
    """:meth:`Harness.run` on a Ray cluster (or a local Ray runtime); returns the report.

    Args:
        build_harness: ``build_harness(out_dir) -> Harness``: builds the harness (Fuse, LMs, metric,
            examples in a fixed order) for a given output directory. It runs on the driver with
            ``out_dir`` and in every actor with a scratch directory, so it must be picklable (a
            module-level function or a ``functools.partial`` of one).
        out_dir: The driver's run directory (journal and reports).
        ray: The Ray options (default ``RayOptions()``): ``address``, ``actors``, ``concurrency``
            (examples in flight per actor), ``batch_size`` and ``actor_cpus``.
    """
    from fusion_dspy.synth.ray import _ray

    options = RayOptions.given(ray, owner="run_harness_ray")
    runtime = _ray()
    harness = build_harness(str(Path(out_dir)))
    done = harness._done()
    ids = example_ids(harness.examples)
    items = [
        {"position": position, "done_json": json.dumps([[k[0], k[1], v] for k, v in done.get(eid, {}).items()])}
        for position, eid in enumerate(ids)
    ]
    if not runtime.is_initialized():
        runtime.init(address=options.address, log_to_driver=False)
    dataset = runtime.data.from_items(items).map_batches(
        _EvalActor,
        fn_constructor_kwargs={"build_harness": build_harness, "fingerprint": harness.fingerprint,
                               "examples": ids, "concurrency": options.concurrency},
        batch_format="numpy",
        **options.map_batches_kwargs(),
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
