from __future__ import annotations

import json

from fusion_dspy.cli import main

POOL = {
    "teachers": [{"name": "a", "model": "fake/a"}, {"name": "b", "model": "fake/b", "samples": 2}],
    "fusors": [{"name": "f", "model": "fake/f"}],
}


def test_run_prints_candidates_and_answer(tmp_path, capsys):
    path = tmp_path / "pool.json"
    path.write_text(json.dumps(POOL))
    code = main(["run", "--config", str(path), "--input", "question=What is 2+2?"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.count("#") >= 3 and "local/a" not in out  # teachers shown by their config names
    assert "  #0 a " in out and "  #1 b " in out and "  #2 b " in out
    # The default guard is on (mbr ranks for free): the fake fusor's text loses to candidate #0.
    assert "Answer (guarded):" in out and "guard (mbr): returned the pick, candidate #0" in out and "tokens:" in out


def test_run_json_output(tmp_path, capsys):
    path = tmp_path / "pool.json"
    path.write_text(json.dumps(POOL))
    assert main(["run", "--config", str(path), "--input", "question=q", "--mode", "select", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert set(payload["outputs"]) == {"answer"}
    assert payload["report"]["path"] == "select" and len(payload["report"]["candidates"]) == 3


def test_bad_input_is_a_one_line_error(tmp_path, capsys):
    path = tmp_path / "pool.json"
    path.write_text(json.dumps(POOL))
    assert main(["run", "--config", str(path), "--input", "oops"]) == 2
    assert "error: --input expects FIELD=VALUE" in capsys.readouterr().err
    assert main(["run", "--config", str(path), "--input", "query=q"]) == 2
    assert "missing input field(s) ['question']" in capsys.readouterr().err
    assert main(["run", "--config", str(tmp_path / "missing.toml"), "--input", "question=q"]) == 2


def test_an_input_given_twice_is_an_error_naming_the_field(tmp_path, capsys):
    path = tmp_path / "pool.json"
    path.write_text(json.dumps(POOL))
    assert main(["run", "--config", str(path), "--input", "question=first", "--input", " question=second"]) == 2
    err = capsys.readouterr().err
    assert "error: --input question is given twice" in err and "\n" not in err.strip()


def test_subcommand_help_lists_its_own_arguments(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "--config" in capsys.readouterr().out


def test_run_with_a_named_pool(tmp_path, capsys):
    path = tmp_path / "pool.json"
    path.write_text(json.dumps({**POOL, "pools": {"just-b": ["b"]}}))
    assert main(["run", "--config", str(path), "--input", "question=q", "--pool", "just-b", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert {c["teacher"] for c in payload["report"]["candidates"]} == {"b"}
    assert main(["run", "--config", str(path), "--input", "question=q", "--pool", "nope"]) == 2
    assert "Unknown pool 'nope'" in capsys.readouterr().err
