"""The toy harness of the evaluate tests, module-level so Ray actors can import and build it too.

Teachers a and b answer from :data:`ANSWERS` (plan a b a b: a draws positions 0, 2 and b 1, 3);
the fusor always answers ``fusor_answer``.
"""

from __future__ import annotations

import threading
import time

import dspy

from fusion_dspy import Fuse
from fusion_dspy import Teacher
from fusion_dspy.evaluate import Harness
from fusion_dspy.selectors import MajorityVote
from fusion_dspy.testing import FakeEngine

__all__ = ["ANSWERS", "GOLD", "metric", "more_examples", "ray_harness", "teacher_engines", "toy_harness"]

ANSWERS = {"q0": ["1", "1", "2", "2"], "q1": ["5", "6", "6", "6"], "q2": ["9", "8", "7", "9"]}
GOLD = {"q0": "2", "q1": "6", "q2": "9"}


def metric(example, prediction, trace=None):
    return float(str(prediction.answer) == example.answer)


def teacher_engines(*, delayed=False):
    """Teachers a and b over :data:`ANSWERS`; ``delayed``: each example after its own delay (by its
    ``tag``), so the results of a concurrent run reach the journal out of order."""
    def responder(name):
        def respond(request):
            if delayed:
                time.sleep(0.01 * ((int(request.inputs["tag"]) * 7) % 5))
            position = {"a": [0, 2], "b": [1, 3]}[name][request.sample(name)]
            return {"answer": ANSWERS[request.inputs["question"]][position]}
        return respond
    return FakeEngine(name="a", responder=responder("a")), FakeEngine(name="b", responder=responder("b"))


def more_examples(count=12):
    """``count`` examples cycling over q0, q1, q2, each with its position as ``tag``."""
    return [dspy.Example(question=f"q{i % 3}", answer=GOLD[f"q{i % 3}"], tag=i).with_inputs("question", "tag")
            for i in range(count)]


def toy_harness(out_dir, *, count=12, concurrency=1, delayed=True, resamples=300, fusor_answer="6"):
    """The harness over :func:`more_examples` with N in {2, 4}, majority and MBR; returns it and its engines."""
    a, b = teacher_engines(delayed=delayed)
    fusor = FakeEngine(name="f", responder=lambda r: {"comparison": "c", "answer": fusor_answer})
    fuse = Fuse("question, tag -> answer", 4, teachers=[Teacher(a.lm(), name="a", samples=2),
                                                         Teacher(b.lm(), name="b", samples=2)], fusor=fusor.lm())
    harness = Harness(fuse=fuse, metric=metric, examples=more_examples(count), ns=[2, 4],
                      selectors=[MajorityVote(), "mbr"], out_dir=out_dir, metric_name="EM", task="toy",
                      progress=False, resamples=resamples, plots=False, concurrency=concurrency)
    return harness, (a, b, fusor)


def ray_harness(out_dir):
    """:func:`toy_harness` as ``run_harness_ray`` builds it: 9 examples, no delays, the harness only."""
    return toy_harness(out_dir, count=9, delayed=False, resamples=200)[0]


def fails_on_first_request(teacher):
    """A ``FakeEngine(fail=...)`` predicate: ``teacher``'s first draw fails the first time each question asks
    for it (a transient fault, not stored), and succeeds when asked again."""
    seen, lock = set(), threading.Lock()

    def fails(request):
        with lock:
            first = (request.inputs["question"], request.seed) not in seen
            seen.add((request.inputs["question"], request.seed))
        return first and request.sample(teacher) == 0

    return fails
