"""benchmarks/compare_runs.py: two journals compared method by method on the examples both finished."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import load_script

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "compare_runs.py"


def _bench():
    return load_script(BENCH, "compare_runs")


def _journal(run: Path, scores: dict[str, list[float | None]], comparison: str = "") -> Path:
    run.mkdir()
    lines = [{"kind": "header", "config": {}}]
    for method, values in scores.items():
        for index, score in enumerate(values):
            if score is None:
                continue
            lines.append({"kind": "result", "result": {
                "example": f"e{index}", "method": method, "score": score, "error": None, "time_s": 2.0,
                "usage": {"output_tokens": 10}, "comparison": comparison or None}})
    lines.append({"kind": "result", "result": {"example": "e0", "method": "fusion", "score": 0.0, "time_s": 1.0,
                                                "error": "TimeoutError", "usage": {}}})  # errors are not scores
    (run / "results.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return run


def test_deltas_are_paired_on_the_examples_both_runs_finished(tmp_path: Path) -> None:
    a = _journal(tmp_path / "a", {"fusion": [50, 60, 70, 80], "bon-mbr": [55, 55, 55, 55]}, comparison="x" * 10)
    b = _journal(tmp_path / "b", {"fusion": [52, 62, 72, None], "bon-mbr": [55, 55, 55, 55]}, comparison="y" * 40)
    table = _bench().compare(a, b)
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert "| fusion | 3 | 60.00 | 62.00 | +2.00 [+2.00, +2.00] |" in rows["fusion"]  # e3 unfinished in B
    assert "3/0/0" in rows["fusion"] and "10.0 / 40.0" in rows["fusion"]
    assert "+0.00" in rows["bon-mbr"] and "| 4 |" in rows["bon-mbr"]
    with (b / "results.jsonl").open("a") as handle:  # run B is still being written (or was killed)
        handle.write('{"kind": "result", "result": {"example": "e3", "meth')
    assert _bench().compare(a, b) == table
    only = _bench().compare(a, b, ["bon-mbr"])
    assert "fusion" not in only
