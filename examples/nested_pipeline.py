"""Fuse nested in a larger DSPy program, then saved and loaded as JSON.

The program drafts search keywords with a plain Predict, answers with a Fuse, and is an ordinary
``dspy.Module``: ``named_predictors()`` shows ``fuse.generate`` and ``fuse.fusor`` to optimizers,
and ``save``/``load`` round-trip the Fuse configuration (LMs are re-attached by name).

    python examples/nested_pipeline.py            # runs offline on the bundled local models
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import dspy  # noqa: E402

from fusion_dspy import Fuse  # noqa: E402
from fusion_dspy import FusorPrompt  # noqa: E402
from fusion_dspy import Teacher  # noqa: E402
from fusion_dspy import local  # noqa: E402


class ExplainThenAnswer(dspy.Module):
    def __init__(self, teachers: list[Teacher], fusor: dspy.LM) -> None:
        super().__init__()
        self.topic = dspy.Predict("question -> topic")
        self.fuse = Fuse(
            "question, topic -> answer",
            n=3,
            teachers=teachers,
            fusor=fusor,
            mode="auto",  # skip the fusor when the teachers already agree
            prompt=FusorPrompt(length_control=True),
        )

    def forward(self, question: str) -> dspy.Prediction:
        topic = self.topic(question=question).topic
        return self.fuse(question=question, topic=topic)


def main() -> None:
    qwen = local.lm("qwen2.5-0.5b", max_tokens=64)
    teachers = [
        Teacher(qwen, temperature=0.8, samples=2, name="qwen"),
        Teacher(local.lm("smollm2-135m", max_tokens=64), temperature=0.8, name="smol"),
    ]
    program = ExplainThenAnswer(teachers, fusor=local.lm("qwen2.5-0.5b", max_tokens=256))
    print("predictors:", [name for name, _ in program.named_predictors()])
    with dspy.context(lm=qwen):
        prediction = program(question="How many legs does a spider have?")
    print("answer:", prediction.answer, "| path:", prediction.fusion.path)

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "program.json")
        program.fuse.configure(n=2, mode="select", selector="majority")
        program.save(path)
        restored = ExplainThenAnswer(teachers, fusor=local.lm("qwen2.5-0.5b", max_tokens=256))
        restored.load(path)
        print("restored configuration:", restored.fuse.settings.model_dump(exclude={"prompt"}))


if __name__ == "__main__":
    main()
