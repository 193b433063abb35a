"""Wall time of Fuse(n=5) against one call, dspy.BestOfN(N=5), and Fuse's own overhead.

Engines sleep a fixed time per call (a stand-in for network latency), so the numbers isolate
what the framework adds. Everything is measured in this run; ratios are against baselines
measured here too.

    python benchmarks/fuse_latency.py [--delay 0.25] [--repeats 5] [--overhead-calls 200]

Goals (issue #2, #9): Fuse(n=5) <= 1.15 x (one teacher call + one fusor call); framework overhead
< 2 ms per call, sync and async (measured with ``guard=False``: the guard's chrF-MBR is work the
caller asked for, reported on its own line as the default Fuse's extra time); under load (16
concurrent calls x n=8, timeout = 1.6 x the teachers' latency, as in issue #9's repro of 0.5 s /
0.8 s) no spurious timeouts, with wall time reported against one teacher call + one fusor call.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy  # noqa: E402

from fusion_dspy import Fuse  # noqa: E402
from fusion_dspy import Teacher  # noqa: E402
from fusion_dspy import TeacherTimeoutError  # noqa: E402
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


def atimed(make: Callable[[int], object], repeats: int) -> float:
    """:func:`timed` for coroutines: median wall time of ``await make(i)``, one event loop."""

    async def run() -> float:
        samples = []
        for i in range(repeats):
            start = time.perf_counter()
            await make(i)
            samples.append(time.perf_counter() - start)
        return statistics.median(samples)

    return asyncio.run(run())


def cpu_per_call(fn: Callable[[int], object], repeats: int, *, use_async: bool = False) -> float:
    """CPU seconds per call over all threads (``time.process_time``): robust to a busy machine."""
    if use_async:

        async def run() -> None:
            for i in range(repeats):
                await fn(i)  # type: ignore[misc]

        start = time.process_time()
        asyncio.run(run())
    else:
        start = time.process_time()
        for i in range(repeats):
            fn(i)
    return (time.process_time() - start) / repeats


def cpu_overhead(fuse: Fuse, generate: dspy.Predict, teacher: dspy.LM, fusor: dspy.LM, rendered: str,
                 calls: int, *, use_async: bool) -> float:
    """CPU seconds a Fuse(n=5) call costs beyond its five teacher calls and one fusor call."""
    name = "acall" if use_async else "__call__"
    tag = "ca" if use_async else "cs"
    total = cpu_per_call(lambda i: getattr(fuse, name)(question=f"{tag}{i}"), calls, use_async=use_async)
    draw = cpu_per_call(lambda i: getattr(generate, name)(question=f"{tag}{i}", lm=teacher), calls,
                        use_async=use_async)
    fused = cpu_per_call(lambda i: getattr(fuse.fusor, name)(question=f"{tag}{i}", candidates=rendered, lm=fusor),
                         calls, use_async=use_async)
    return total - 5 * draw - fused


def under_load(fuse: Fuse, calls: int, *, use_async: bool, tag: str) -> tuple[float, int, int]:
    """``calls`` concurrent Fuse calls: wall time, spurious timeouts, draws made."""
    questions = [f"{tag}{i}" for i in range(calls)]
    start = time.perf_counter()
    if use_async:

        async def run() -> list:
            return list(await asyncio.gather(*(fuse.acall(question=q) for q in questions)))

        preds = asyncio.run(run())
    else:
        with concurrent.futures.ThreadPoolExecutor(calls) as pool:
            preds = list(pool.map(lambda q: fuse(question=q), questions))
    wall = time.perf_counter() - start
    records = [c for p in preds for c in p.fusion.candidates]
    spurious = sum(c.error_type == TeacherTimeoutError.__name__ for c in records)
    return wall, spurious, len(records)


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
    parser.add_argument("--load-calls", type=int, default=16, help="concurrent calls in the load test")
    parser.add_argument("--load-n", type=int, default=8, help="candidates per call in the load test")
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
    zero_fuse = Fuse("question -> answer", 5, teachers=zero_teachers, fusor=zero_fusor, guard=False)
    guarded_fuse = Fuse("question -> answer", 5, teachers=zero_teachers, fusor=zero_fusor)  # the default guard
    generate = dspy.Predict("question -> answer")
    calls = args.overhead_calls
    t_zero_fuse = timed(lambda i: zero_fuse(question=f"z{i}"), calls)
    t_zero_guarded = timed(lambda i: guarded_fuse(question=f"zg{i}"), calls)
    t_zero_predict = timed(lambda i: generate(question=f"z{i}", lm=zero_teachers[0].lm), calls)
    # The bare fusor baseline reads the same five rendered candidates a Fuse call renders.
    shown = zero_fuse(question="probe").fusion.candidates
    rendered = render_candidates([Candidate(c.index, c.teacher, c.sample, c.outputs) for c in shown])
    t_zero_fusor = timed(lambda i: zero_fuse.fusor(question=f"z{i}", candidates=rendered, lm=zero_fusor), calls)
    overhead_ms = (t_zero_fuse - 5 * t_zero_predict - t_zero_fusor) * 1000
    # The same through the async driver, against the same calls made with acall.
    t_zero_afuse = atimed(lambda i: zero_fuse.acall(question=f"za{i}"), calls)
    t_zero_apredict = atimed(lambda i: generate.acall(question=f"za{i}", lm=zero_teachers[0].lm), calls)
    t_zero_afusor = atimed(
        lambda i: zero_fuse.fusor.acall(question=f"za{i}", candidates=rendered, lm=zero_fusor), calls
    )
    aoverhead_ms = (t_zero_afuse - 5 * t_zero_apredict - t_zero_afusor) * 1000
    # CPU time (all threads) of the same, which a busy machine's scheduling delays do not inflate.
    cpu = {}
    for flavour in ("sync", "async"):
        cpu[flavour] = cpu_overhead(zero_fuse, generate, zero_teachers[0].lm, zero_fusor, rendered, calls,
                                    use_async=flavour == "async") * 1000

    # Load: many concurrent calls, a timeout with head room over the teachers' latency.
    load_timeout = 1.6 * args.delay
    load_teachers, load_fusor = engines(args.delay)
    load_fuse = Fuse("question -> answer", args.load_n, teachers=load_teachers, fusor=load_fusor,
                     timeout=load_timeout)
    load = {
        flavour: under_load(load_fuse, args.load_calls, use_async=flavour == "async", tag=flavour)
        for flavour in ("sync", "async")
    }
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
        f"framework overhead per Fuse(n=5) call, zero-latency engine, sync: {overhead_ms:.2f} ms "
        f"(Fuse {t_zero_fuse * 1000:.2f} ms vs 5 Predict {t_zero_predict * 1000:.2f} ms + fusor "
        f"{t_zero_fusor * 1000:.2f} ms; goal < 2 ms: {'met' if overhead_ms < 2 else 'NOT met'})"
    )
    print(
        f"framework overhead per Fuse(n=5) call, zero-latency engine, async: {aoverhead_ms:.2f} ms "
        f"(Fuse {t_zero_afuse * 1000:.2f} ms vs 5 Predict {t_zero_apredict * 1000:.2f} ms + fusor "
        f"{t_zero_afusor * 1000:.2f} ms; goal < 2 ms: {'met' if aoverhead_ms < 2 else 'NOT met'})"
    )
    print(f"framework CPU time per Fuse(n=5) call (all threads), sync: {cpu['sync']:.2f} ms, "
          f"async: {cpu['async']:.2f} ms")
    guard_ms = (t_zero_guarded - t_zero_fuse) * 1000
    print(f"the default guard (chrF-MBR pick, then fused vs pick), sync: +{guard_ms:.2f} ms per call"
          f" (Fuse with the guard {t_zero_guarded * 1000:.2f} ms vs guard=False {t_zero_fuse * 1000:.2f} ms)")
    print()
    print(f"load: {args.load_calls} concurrent calls x n={args.load_n}, teachers {args.delay * 1000:.0f} ms, "
          f"timeout {load_timeout:.2f} s")
    for flavour, (wall, spurious, draws) in load.items():
        print(f"  {flavour:<5} wall {wall:.3f} s = {wall / floor:.2f} x (one teacher + one fusor call); "
              f"spurious timeouts {spurious} of {draws} draws (goal 0: {'met' if spurious == 0 else 'NOT met'})")

if __name__ == "__main__":
    main()
