"""Synthesis over more than one machine: prompts mapped over a Ray Data dataset with an actor pool.

Each actor builds the Fuse and its LMs once (``build_fuse`` runs in the actor), then does batches
of prompts with ``concurrency`` threads, like a local run. The actors only compute; every record and
failed row comes back to the driver and is written by the same :class:`~fusion_dspy.synth.pipeline.RunDirectory`
as a local run. So a Ray run has the same directory layout, resumes like a local run (either kind
resumes the other), and exports the same ``datasets.Dataset``.

Install with ``pip install 'ray[data]>=2.60,<3'`` (the ``[ray]`` extra). The pool is a
:class:`~fusion_dspy.ray_options.RayOptions`.
On one machine ``RayOptions(address=None)`` starts a local Ray runtime; on a cluster (Ray's cluster
launcher, or KubeRay) pass ``address="auto"`` from the head node or ``"ray://<head>:10001"`` from
outside. Each node must be able to build the Fuse: the package installed, the pool config at the
same path, and the API keys in the node's environment (never in the config or the Ray job);
self-hosted teachers are typically a vLLM or llama.cpp server per node (``api_base =
"http://127.0.0.1:8000/v1"`` in the pool config). ``draws.jsonl`` is written by each actor under
``out_dir`` on its own node: with a shared file system a resumed run re-uses the draws of prompts
that were in flight; without one it only re-asks their teachers (finished rows are on the driver
either way).

Example:
    >>> from fusion_dspy.synth.ray import RayOptions, synthesize_ray
    >>> result = synthesize_ray(make_fuse, prompts, "ds/", ray=RayOptions(address="auto", actors=4, concurrency=16))
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable
from collections.abc import Iterable
from typing import Any

from fusion_dspy.fuse import Fuse
from fusion_dspy.ray_options import RayOptions
from fusion_dspy.selectors.base import Selector
from fusion_dspy.synth.pipeline import RunDirectory
from fusion_dspy.synth.pipeline import SynthResult
from fusion_dspy.synth.pipeline import check_options
from fusion_dspy.synth.prompts import Prompt
from fusion_dspy.synth.worker import Work

__all__ = ["RayOptions", "synthesize_ray"]

_logger = logging.getLogger(__name__)


def _ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as error:
        raise ImportError("The Ray path needs Ray Data: pip install 'ray[data]>=2.60,<3', the [ray] extra.") from error
    return ray


class _SynthActor:
    """A Ray Data actor: builds the Fuse once, then turns batches of prompts into :class:`Work` rows."""

    def __init__(self, *, build_fuse: Callable[[], Fuse], selector: Selector | str | None, digest: str,
                 max_attempts: int, concurrency: int, store_path: str) -> None:
        from fusion_dspy.selectors import get_selector
        from fusion_dspy.store import JsonlStore
        from fusion_dspy.synth.pipeline import _configuration
        from fusion_dspy.synth.pipeline import config_hash
        from fusion_dspy.synth.worker import PromptWorker

        fuse = build_fuse()
        chosen = get_selector(selector) if isinstance(selector, str) else selector
        mine = config_hash(_configuration(fuse, chosen))
        if mine != digest:
            raise ValueError(
                f"this Ray worker builds another configuration (hash {mine}, driver {digest}): install the same "
                "fusion-dspy version and pool config on every node."
            )
        if fuse.store is None:
            fuse.store = JsonlStore(store_path)
        self.worker = PromptWorker(fuse, chosen, digest=digest, max_attempts=max_attempts)
        self.concurrency = concurrency

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        from fusion_dspy.concurrency import bounded_map
        from fusion_dspy.synth.worker import failure_row

        prompts = [
            Prompt(id=str(pid), index=int(index), inputs=json.loads(str(inputs)))
            for pid, index, inputs in zip(batch["id"], batch["index"], batch["inputs_json"], strict=True)
        ]
        out: dict[str, list[Any]] = {"id": [], "index": [], "work_json": []}
        for outcome in bounded_map(self.worker, prompts, concurrency=min(self.concurrency, len(prompts))):
            work = outcome.value if outcome.error is None else Work(
                failure=failure_row(outcome.item, self.worker.digest, self.worker.max_attempts, outcome.error))
            out["id"].append(outcome.item.id)
            out["index"].append(outcome.item.index)
            out["work_json"].append(json.dumps(dataclasses.asdict(work), ensure_ascii=False, default=str))
        return out


def synthesize_ray(
    build_fuse: Callable[[], Fuse],
    prompts: Iterable[Prompt],
    out_dir: str | os.PathLike[str],
    *,
    ray: RayOptions | None = None,
    also_select: Selector | str | None = None,
    shard_size: int = 500,
    output_format: str = "records",
    progress: bool = True,
    export: bool = True,
    max_attempts: int = 3,
    retry_failed: bool = False,
    total: int | None = None,
) -> SynthResult:
    """:func:`~fusion_dspy.synth.pipeline.synthesize` on a Ray cluster (or a local Ray runtime).

    Args:
        build_fuse: Builds the configured Fuse (no arguments). It runs once on the driver (for the
            configuration hash) and once in every actor, so it must be picklable (a module-level
            function or a ``functools.partial`` of one) and build LMs, not capture them.
        prompts: The work; the pending prompts are handed to Ray Data as one dataset.
        out_dir: The run directory, on the driver (the same layout as a local run).
        ray: The Ray options (default ``RayOptions()``): ``address``, ``actors`` (each builds its
            own Fuse and LMs), ``concurrency`` (prompts in flight per actor), ``batch_size`` and
            ``actor_cpus``.
        also_select, shard_size, output_format, progress, export, max_attempts, retry_failed, total:
            As in :func:`~fusion_dspy.synth.pipeline.synthesize`.

    Returns:
        A :class:`~fusion_dspy.synth.pipeline.SynthResult` (``limits`` is empty: the limited LMs
        live in the actors).
    """
    from fusion_dspy.selectors import get_selector

    options = RayOptions.given(ray, owner="synthesize_ray")
    check_options(shard_size=shard_size, output_format=output_format, max_attempts=max_attempts)
    runtime = _ray()
    selector = get_selector(also_select) if isinstance(also_select, str) else also_select
    if total is None and hasattr(prompts, "__len__"):
        total = len(prompts)  # type: ignore[arg-type]
    run = RunDirectory(build_fuse(), selector, out_dir, shard_size=shard_size, retry_failed=retry_failed,
                       total=total, progress=progress)
    pending = [{"id": p.id, "index": p.index, "inputs_json": json.dumps(p.inputs, ensure_ascii=False, default=str)}
               for p in run.pending(prompts)]
    try:
        if pending:
            if not runtime.is_initialized():
                runtime.init(address=options.address, log_to_driver=False)
            _map(runtime, run, pending, build_fuse=build_fuse, selector=also_select, options=options,
                 max_attempts=max_attempts)
    finally:
        run.close()
    return run.finish(export=export, output_format=output_format, limits={})


def _map(runtime: Any, run: RunDirectory, pending: list[dict[str, Any]], *, build_fuse: Callable[[], Fuse],
         selector: Selector | str | None, options: RayOptions, max_attempts: int) -> None:
    dataset = runtime.data.from_items(pending).map_batches(
        _SynthActor,
        fn_constructor_kwargs={
            "build_fuse": build_fuse,
            "selector": selector,
            "digest": run.digest,
            "max_attempts": max_attempts,
            "concurrency": options.concurrency,
            "store_path": str(run.out.resolve() / "draws.jsonl"),
        },
        batch_format="numpy",
        **options.map_batches_kwargs(),
    )
    for row in dataset.iter_rows():
        prompt = Prompt(id=str(row["id"]), index=int(row["index"]), inputs={})
        work = Work(**json.loads(str(row["work_json"])))
        if not run.accept(prompt, work):
            break  # a hard quota: what is still running is dropped and redone on the resume
