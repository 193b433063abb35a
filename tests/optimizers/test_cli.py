from __future__ import annotations

import json
import sys

import pytest

from fusion_dspy.cli import main

POOL = """
[[teachers]]
name = "alpha"
model = "fake/alpha"
cache = false

[[teachers]]
name = "beta"
model = "fake/beta"
cache = false

[[fusors]]
name = "judge"
model = "fake/judge"
cache = false
"""


def write_inputs(tmp_path, count: int = 4):
    pool = tmp_path / "pool.toml"
    pool.write_text(POOL)
    data = tmp_path / "val.jsonl"
    data.write_text("".join(json.dumps({"question": f"q{i}", "answer": f"a{i}"}) + "\n" for i in range(count)))
    return pool, data


def test_optimize_writes_a_compiled_program_and_prints_the_table(tmp_path, capsys):
    pool, data = write_inputs(tmp_path)
    out = tmp_path / "compiled.json"
    code = main(["optimize", "--program", "tests.optimizers.cli_program:program", "--config", str(pool),
                 "--valset", str(data), "--trials", "5", "--storage", f"sqlite:///{tmp_path / 'study.db'}",
                 "--study-name", "cli", "--num-instructions", "0", "--temperatures", "keep", "--no-progress",
                 "--output", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "configuration" in printed and "chosen configuration" in printed
    saved = json.loads(out.read_text())
    assert saved["config"]["n"] >= 1 and set(saved["config"]["teachers"]) <= {"alpha", "beta"}
    assert (tmp_path / "study.db.fusion" / "cli" / "draws.jsonl").exists()


def test_optimize_searches_the_configs_named_pools(tmp_path, capsys):
    pool, data = write_inputs(tmp_path)
    pool.write_text(POOL + '\n[pools]\nboth = ["alpha", "beta"]\nbeta-alone = ["beta"]\n')
    code = main(["optimize", "--program", "tests.optimizers.cli_program:program", "--config", str(pool),
                 "--valset", str(data), "--trials", "4", "--num-instructions", "0", "--temperatures", "keep",
                 "--no-progress", "--storage", f"sqlite:///{tmp_path / 'study.db'}", "--study-name", "pools"])
    assert code == 0
    import optuna

    study = optuna.load_study(study_name="pools", storage=f"sqlite:///{tmp_path / 'study.db'}")
    params = set().union(*(t.params for t in study.trials))
    assert "self.pool" in params and not any(p.startswith("self.use.") for p in params)
    assert {tuple(t.user_attrs["config"]["self"]["teachers"]) for t in study.trials} <= {("alpha", "beta"),
                                                                                         ("beta",)}


def test_optimize_runs_with_its_defaults_on_a_pool_like_the_readmes(tmp_path, capsys):
    """Default instruction proposals and temperature choices, a teacher at T=0.8 (not a choice) and a named
    fusor, as in the README's pool.toml: this failed before any trial ('Unknown teacher name(s)')."""
    pool, data = write_inputs(tmp_path)
    pool.write_text(POOL.replace('model = "fake/alpha"', 'model = "fake/alpha"\ntemperature = 0.8'))
    code = main(["optimize", "--program", "tests.optimizers.cli_program:program", "--config", str(pool),
                 "--valset", str(data), "--trainset", str(data), "--trials", "4", "--no-progress",
                 "--storage", f"sqlite:///{tmp_path / 'study.db'}", "--study-name", "defaults"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "chosen configuration" in captured.out


def test_optimize_puts_the_draws_in_the_named_bank_and_refuses_a_path_for_a_name(tmp_path, capsys):
    pool, data = write_inputs(tmp_path)
    argv = ["optimize", "--program", "tests.optimizers.cli_program:program", "--config", str(pool),
            "--valset", str(data), "--trials", "3", "--num-instructions", "0", "--temperatures", "keep",
            "--no-progress", "--storage", f"sqlite:///{tmp_path / 'study.db'}"]
    assert main([*argv, "--study-name", "one", "--bank-name", "shared"]) == 0
    root = tmp_path / "study.db.fusion"
    assert (root / "shared" / "draws.jsonl").exists() and (root / "one" / "evals.jsonl").exists()
    assert not (root / "one" / "draws.jsonl").exists()
    capsys.readouterr()
    assert main([*argv, "--study-name", "two", "--bank-name", "../elsewhere"]) == 2
    assert "bank_name" in capsys.readouterr().err


def test_optimize_reports_bad_input_as_one_line(tmp_path, capsys):
    pool, data = write_inputs(tmp_path)
    code = main(["optimize", "--program", "tests.optimizers.cli_program:nothing", "--config", str(pool),
                 "--valset", str(data)])
    assert code == 2
    assert "has no attribute 'nothing'" in capsys.readouterr().err


def test_dashboard_says_how_to_install_it_when_missing(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)
    assert main(["dashboard", "--storage", "sqlite:///x.db"]) == 1
    assert "pip install optuna-dashboard" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["optimize", "dashboard"])
def test_subcommands_declare_their_options(module):
    import argparse
    import importlib

    parser = argparse.ArgumentParser()
    importlib.import_module(f"fusion_dspy.cli.{module}").add_arguments(parser)
    assert "--storage" in parser.format_help()
