"""The report: what the table prints is what was measured."""

from __future__ import annotations

import json

from tests.evaluate.builders import toy_harness


def test_a_failing_corpus_metric_is_reported_per_method_and_the_report_is_still_written(tmp_path):
    """A corpus metric that cannot score a prediction without output (a failed example) raised out of
    ``report()`` at the end of the run: no report.json or report.md for the whole run. It is now a
    recorded fault of that method's corpus column; the other methods keep their corpus score."""
    harness, _ = toy_harness(tmp_path, count=3, delayed=False)

    def corpus(examples, predictions):
        if any(p.answer == "6" for p in predictions):
            raise KeyError("answer")
        return float(len(examples))

    harness.corpus_metric = corpus
    report = harness.run()
    assert report.get("fusion", 4).corpus is None  # the fusor always says "6"
    assert "KeyError" in report.get("fusion", 4).corpus_error
    assert report.get("single:a", 1).corpus == 3.0 and report.get("single:a", 1).corpus_error is None  # 1, 5, 9
    markdown = (tmp_path / "report.md").read_text()
    assert "`fusion` N=4: the corpus metric failed (KeyError" in markdown
    assert json.loads((tmp_path / "report.json").read_text())["methods"]


def test_a_report_with_nothing_measured_yet_writes_its_files(tmp_path):
    """A quota hit on the first example writes the report of what was measured (nothing) before raising
    QuotaExhaustedError; the methods plot took max() of no rows, so a ValueError replaced the quota error."""
    import pytest
    from dspy import lm15

    from fusion_dspy.limits import QuotaExhaustedError

    harness, (a, b, _) = toy_harness(tmp_path, count=2, delayed=False)
    harness.plots = True

    def respond(request):
        raise lm15.BillingError("You exceeded your current quota")

    a.responder = b.responder = respond
    with pytest.raises(QuotaExhaustedError):
        harness.run()
    assert json.loads((tmp_path / "report.json").read_text())["methods"] == []
    assert (tmp_path / "report.md").exists()
