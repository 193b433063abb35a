"""Programs the CLI tests load by ``module:attr`` (the pool comes from the config file)."""

from __future__ import annotations

import time

import dspy

from fusion_dspy import Fuse


def program() -> Fuse:
    return Fuse("question -> answer", n=2)


class Slow(dspy.Module):
    """A Fuse that takes a while per example, so a test can kill a worker mid-trial."""

    def __init__(self, seconds: float = 0.25) -> None:
        super().__init__()
        self.seconds = seconds
        self.answer = Fuse("question -> answer", n=2)

    def forward(self, question: str) -> dspy.Prediction:
        time.sleep(self.seconds)
        return self.answer(question=question)
