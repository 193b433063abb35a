"""Wall time of Fuse(n=5) against one call, dspy.BestOfN(N=5), and Fuse's own overhead.

Engines sleep a fixed time per call (a stand-in for network latency), so the numbers isolate
what the framework adds. Everything is measured in this run; ratios are against baselines
measured here too.

    python benchmarks/fuse_latency.py [--delay 0.25] [--repeats 5] [--overhead-calls 200]

Goals (issue #2): Fuse(n=5) <= 1.15 x (one teacher call + one fusor call); overhead < 2 ms/call.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy  # noqa: E402

from fusion_dspy import Fuse  # noqa: E402
from fusion_dspy import Teacher  # noqa: E402
from fusion_dspy.candidate import Candidate  # noqa: E402
from fusion_dspy.candidate import render_candidates  # noqa: E402
from fusion_dspy.testing import FakeEngine  # noqa: E402


def timed(fn: Callable[[int], object], repeats: int) -> float:
    """Median wall time of ``fn(i)`` over ``repeats`` calls (distinct inputs: no cache effects)."""
    samples = []
    for i in range(repeats):
        start = time.perf_counter()
        fn(i)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def engines(delay: float) -> tuple[list[Teacher], dspy.LM]:
    teachers = [
        Teacher(FakeEngine(name=f"teacher{i}", delay=delay).lm(), name=f"teacher{i}", temperature=0.7)
        for i in range(5)
    ]
    fusor = FakeEngine(name="fusor", delay=delay, responder=lambda r: {"comparison": "c"}).lm()
    return teachers, fusor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--delay", type=float, default=0.25, help="seconds each LM call sleeps")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--overhead-calls", type=int, default=200)
    args = parser.parse_args()
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)

    teachers, fusor = engines(args.delay)
    single = dspy.Predict("question -> answer")
    fuse = Fuse("question -> answer", 5, teachers=teachers, fusor=fusor, mode="fuse")
    best_of_n = dspy.BestOfN(
        module=dspy.Predict("question -> answer"), N=5, reward_fn=lambda args, pred: 0.0, threshold=1.0
    )

    t_single = timed(lambda i: single(question=f"q{i}", lm=teachers[0].lm), args.repeats)
    t_fuse = timed(lambda i: fuse(question=f"q{i}"), args.repeats)
    with dspy.context(lm=teachers[0].lm):
        t_best = timed(lambda i: best_of_n(question=f"q{i}"), args.repeats)
    t_fusor = timed(
        lambda i: fuse.fusor(question=f"q{i}", candidates="<candidate id=1>\nx\n</candidate>", lm=fusor),
        args.repeats,
    )

    # Overhead: the same LM calls with a zero-latency engine, through Fuse vs through bare Predicts.
    zero_teachers, zero_fusor = engines(0.0)
    zero_fuse = Fuse("question -> answer", 5, teachers=zero_teachers, fusor=zero_fusor)
    generate = dspy.Predict("question -> answer")
    calls = args.overhead_calls
    t_zero_fuse = timed(lambda i: zero_fuse(question=f"z{i}"), calls)
    t_zero_predict = timed(lambda i: generate(question=f"z{i}", lm=zero_teachers[0].lm), calls)
    # The bare fusor baseline reads the same five rendered candidates a Fuse call renders.
    shown = zero_fuse(question="probe").fusion.candidates
    rendered = render_candidates([Candidate(c.index, c.teacher, c.sample, c.outputs) for c in shown])
    t_zero_fusor = timed(lambda i: zero_fuse.fusor(question=f"z{i}", candidates=rendered, lm=zero_fusor), calls)
    overhead_ms = (t_zero_fuse - 5 * t_zero_predict - t_zero_fusor) * 1000

    floor = t_single + t_fusor
    print(f"delay per LM call: {args.delay * 1000:.0f} ms, median of {args.repeats} calls\n")
    print(f"{'method':<36}{'wall (s)':>10}{'vs 1 call':>12}{'vs 1 teacher + 1 fusor':>26}")
    for name, value in [
        ("one Predict call", t_single),
        ("dspy.BestOfN(N=5) (sequential)", t_best),
        ("Fuse(n=5) (parallel + fusor)", t_fuse),
    ]:
        print(f"{name:<36}{value:>10.3f}{value / t_single:>12.2f}{value / floor:>26.2f}")
    print()
    ratio = t_fuse / floor
    print(f"Fuse(n=5) / (one teacher call + one fusor call) = {ratio:.3f}   (goal <= 1.15: "
          f"{'met' if ratio <= 1.15 else 'NOT met'})")
    print(f"BestOfN(N=5) / Fuse(n=5) = {t_best / t_fuse:.2f}x")
    print(
        f"framework overhead per Fuse(n=5) call, zero-latency engine: {overhead_ms:.2f} ms "
        f"(Fuse {t_zero_fuse * 1000:.2f} ms vs 5 Predict {t_zero_predict * 1000:.2f} ms + fusor "
        f"{t_zero_fusor * 1000:.2f} ms; goal < 2 ms: {'met' if overhead_ms < 2 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
