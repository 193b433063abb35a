"""A Ray actor must evaluate the examples the driver means: same fingerprint, same examples in the same order."""

from __future__ import annotations

import pytest

from fusion_dspy.evaluate import example_ids
from fusion_dspy.evaluate.ray import _EvalActor
from tests.evaluate.builders import ray_harness


def reversed_on_workers(out_dir):
    """The toy harness, with the examples reversed in a worker's scratch directory (data loaded unordered)."""
    harness = ray_harness(out_dir)
    if "fusion-eval-actor-" in str(out_dir):
        harness.examples = harness.examples[::-1]
    return harness


def test_an_actor_whose_examples_are_in_another_order_is_refused(tmp_path):
    """The driver sends positions and each position's journaled methods: a worker with another order ran
    example X with example Y's "done" list (skipping X's missing methods, or redoing Y's)."""
    driver = reversed_on_workers(tmp_path)
    with pytest.raises(ValueError, match="examples"):
        _EvalActor(build_harness=reversed_on_workers, fingerprint=driver.fingerprint,
                   examples=example_ids(driver.examples), concurrency=1)
    actor = _EvalActor(build_harness=ray_harness, fingerprint=driver.fingerprint,
                       examples=example_ids(driver.examples), concurrency=1)
    assert actor.harness.fingerprint == driver.fingerprint
