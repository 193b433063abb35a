"""fusion_dspy.evaluate.journal.read_run: the one offline reader of a harness journal."""

from __future__ import annotations

import json

import pytest

from fusion_dspy.evaluate.journal import read_run


def test_read_run_keeps_the_last_result_and_leaves_a_running_journal_untouched(tmp_path):
    path = tmp_path / "results.jsonl"
    lines = [
        {"kind": "header", "fingerprint": "f"},
        {"kind": "candidates", "example": "e1", "n": 2,
         "candidates": [{"index": 0, "outputs": {"answer": "4"}}, {"index": 1, "outputs": None, "error": "Timeout"}]},
        {"kind": "result", "result": {"example": "e1", "method": "fusion", "score": 0.0}},
        {"kind": "result", "result": {"example": "e1", "method": "fusion", "score": 1.0}},  # a redo: the last counts
        {"kind": "result", "result": {"example": "e1", "method": "bon-mbr", "score": 1.0}},
    ]
    text = "".join(json.dumps(line) + "\n" for line in lines) + '{"kind": "result", "res'  # a writer mid-line
    path.write_text(text)
    run = read_run(path)
    assert [c["index"] for c in run.candidates["e1"]] == [0, 1]  # failed draws are kept, as journaled
    assert run.results == {"e1": {"fusion": lines[3]["result"], "bon-mbr": lines[4]["result"]}}
    assert path.read_text() == text


def test_read_run_of_a_missing_journal_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.jsonl"):
        read_run(tmp_path / "nothing.jsonl")


def test_read_run_keeps_the_widest_candidate_list_of_an_example(tmp_path):
    """A run resumed with a smaller largest N journals that N's candidates after the larger N's: the results
    at the larger N were made on all of them, so the widest list is the example's candidates."""
    wide = [{"index": i, "outputs": {"answer": str(i)}} for i in range(4)]
    lines = [
        {"kind": "header", "fingerprint": "f"},
        {"kind": "candidates", "example": "e1", "n": 4, "candidates": wide},
        {"kind": "candidates", "example": "e1", "n": 2, "candidates": wide[:2]},
        {"kind": "candidates", "example": "e2", "n": 2, "candidates": wide[:2]},
        {"kind": "candidates", "example": "e2", "n": 4, "candidates": wide},
        {"kind": "candidates", "example": "e2", "n": 4, "candidates": wide[:3]},  # a redo at the same N: the last
    ]
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    run = read_run(path)
    assert len(run.candidates["e1"]) == 4 and len(run.candidates["e2"]) == 3
