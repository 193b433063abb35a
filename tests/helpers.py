"""Small builders shared by the test modules."""

from __future__ import annotations

from typing import Any

from fusion_dspy.testing import FakeEngine


def teacher_engine(name: str, answer: Any = None, **kwargs: Any) -> FakeEngine:
    """A teacher whose ``answer`` field is ``answer`` (or ``"<name>-<seed>"`` when ``None``)."""

    def respond(request):
        if answer is not None:
            return {"answer": answer}
        return {"answer": f"{name}-{request.seed}"}

    return FakeEngine(name=name, responder=respond, **kwargs)


def fusor_engine(answer: str = "fused", **kwargs: Any) -> FakeEngine:
    """A fusor that writes a fixed comparison and ``answer``."""
    return FakeEngine(
        name="fusor",
        responder=lambda request: {"comparison": "A is better than B.", "answer": answer},
        **kwargs,
    )
