"""CLI errors a person can act on: one line naming the file or option, non-zero exit, no secret ever printed."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest

from fusion_dspy.cli import main
from fusion_dspy.testing.fake_lm import FakeEngine
from fusion_dspy.testing.fake_lm import FakeLMError

SECRET = "sk-PLANTED-0123456789abcdef"
POOL = {"teachers": [{"name": "a", "model": "fake/a"}, {"name": "b", "model": "fake/b"}],
        "fusors": [{"name": "f", "model": "fake/f"}]}
VERBS = ["run", "eval", "synth", "optimize"]


def _argv(verb, config, tmp_path):
    """The smallest invocation of ``verb`` that reads ``config`` first."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "hi"}\n')
    return {
        "run": ["run", "--config", str(config), "--input", "question=q"],
        "eval": ["eval", "--task", "factqa", "--config", str(config), "--limit", "1", "--out", str(tmp_path / "e"),
                 "--no-progress"],
        "synth": ["synth", "--prompts", str(prompts), "--config", str(config), "--out", str(tmp_path / "s"),
                  "--no-progress"],
        "optimize": ["optimize", "--program", "factqa", "--config", str(config), "--trials", "1", "--no-progress"],
    }[verb]


def _error_line(capfd):
    captured = capfd.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    return lines, captured


BAD_CONFIGS = [
    (".yaml", b"teachers:\n  - name: a\n    model: [unclosed\n", "not valid YAML"),
    (".toml", b"[[teachers]\nname = 'a'\n", "not valid TOML"),
    (".json", b'{"teachers": [', "not valid JSON"),
    (".toml", b"\x89PNG\r\n\x1a\n\xff\xfe\x00binary", "not a UTF-8 text file"),
    (".json", b'{"teachers": [{"name": "a", "model": "fake/a", "samples": 0}]}', "teachers[0].samples"),
]


@pytest.mark.parametrize("verb", VERBS)
@pytest.mark.parametrize("suffix, content, problem", BAD_CONFIGS)
def test_a_bad_config_is_one_line_naming_the_file(tmp_path, capfd, verb, suffix, content, problem):
    config = tmp_path / f"pool{suffix}"
    config.write_bytes(content)
    assert main(_argv(verb, config, tmp_path)) == 2
    lines, _ = _error_line(capfd)
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert str(config) in lines[0] and problem in lines[0]


@pytest.fixture
def failing_teachers(monkeypatch):
    def fail(self, parsed):
        raise FakeLMError(f"{self.name}: connection refused")

    monkeypatch.setattr(FakeEngine, "_answer", fail)


def test_run_when_every_teacher_fails_is_one_line_with_the_causes(tmp_path, capfd, failing_teachers):
    config = tmp_path / "pool.json"
    config.write_text(json.dumps(POOL))
    assert main(["run", "--config", str(config), "--input", "question=q"]) == 1
    lines, _ = _error_line(capfd)
    error = [line for line in lines if line.startswith("error: ")]
    assert len(error) == 1
    assert "Only 0 of 2 candidates succeeded" in error[0] and "a: connection refused" in error[0]
    assert str(config) in error[0]


def test_debug_shows_the_traceback(tmp_path, failing_teachers):
    from fusion_dspy.errors import CandidatesExhaustedError

    config = tmp_path / "pool.json"
    config.write_text(json.dumps(POOL))
    for argv in (["--debug", "run"], ["run", "--debug"]):
        with pytest.raises(CandidatesExhaustedError):
            main([*argv, "--config", str(config), "--input", "question=q"])


def test_synth_warning_keeps_the_cause(tmp_path, capfd, caplog, failing_teachers):
    config = tmp_path / "pool.json"
    config.write_text(json.dumps(POOL))
    with caplog.at_level(logging.WARNING):
        code = main(_argv("synth", config, tmp_path))
    assert code == 1
    warnings = [r.getMessage() for r in caplog.records if "written to failed.jsonl" in r.getMessage()]
    assert warnings and all("\n" not in w for w in warnings)
    assert any("Failures:" in w and "a: connection refused" in w for w in warnings)


# -- a planted secret never reaches stdout or stderr ----------------------------------------------

LITERAL = [
    {"api_key": SECRET},
    {"settings": {"openai_api_key": SECRET}},
    {"settings": {"extra_headers": {"Authorization": f"Bearer {SECRET}"}}},
    {"api_base": f"https://u:{SECRET}@127.0.0.1:9/v1"},
    {"api_key_env": SECRET},
]


@pytest.mark.parametrize("verb", VERBS)
@pytest.mark.parametrize("extra", LITERAL)
def test_a_literal_secret_in_the_config_is_refused_and_never_printed(tmp_path, capfd, verb, extra):
    config = tmp_path / "pool.json"
    config.write_text(json.dumps({**POOL, "teachers": [{"name": "r", "model": "openai/gpt-4o-mini", **extra}]}))
    assert main(_argv(verb, config, tmp_path)) == 2
    lines, captured = _error_line(capfd)
    assert SECRET not in captured.out + captured.err
    assert len(lines) == 1 and str(config) in lines[0]


def _env_secret_config(tmp_path):
    config = tmp_path / "remote.json"
    teacher = {"name": "r", "model": "openai/gpt-4o-mini", "api_base_env": "FUSION_T_BASE",
               "api_key_env": "FUSION_T_KEY",
               "settings": {"num_retries": 0, "extra_headers": {"Authorization_env": "FUSION_T_AUTH"}}}
    config.write_text(json.dumps({**POOL, "teachers": [teacher]}))
    env = {**os.environ, "FUSION_T_KEY": SECRET, "FUSION_T_AUTH": f"Bearer {SECRET}",
           "FUSION_T_BASE": f"http://user:{SECRET}@127.0.0.1:9/v1"}
    return config, env


def test_a_secret_from_the_environment_is_never_printed_by_any_verb(tmp_path):
    # Real processes, a teacher whose key, auth header and URL userinfo come from the environment and
    # whose server is unreachable: every verb fails, and none prints the secret.
    config, env = _env_secret_config(tmp_path)
    commands = [["--help"], *([verb, "--help"] for verb in [*VERBS, "dashboard", "demo"])]
    commands += [["-v", *_argv(verb, config, tmp_path)] for verb in ("run", "synth")]
    commands += [["run", "--config", str(config), "--input", "question=q", "--json"],
                 ["dashboard", "--storage", f"postgresql://u:{SECRET}@127.0.0.1:9/db"]]
    for argv in commands:
        done = subprocess.run([sys.executable, "-m", "fusion_dspy.cli", *argv], capture_output=True, text=True,
                              env=env, timeout=300, cwd=tmp_path)
        assert SECRET not in done.stdout + done.stderr, argv
        if argv[-1] != "--help" and argv != ["--help"]:
            assert done.returncode != 0 and "Traceback" not in done.stderr, (argv, done.stderr)


def test_error_lines_are_redacted_before_they_are_flattened_and_cut(monkeypatch):
    # A secret with line breaks and runs of spaces (a service-account JSON), and one that straddles
    # the 2000-character cut: flattening or cutting first would print what redaction no longer matches.
    import argparse

    from fusion_dspy.cli import describe_error
    from fusion_dspy.credentials import read_secret

    monkeypatch.setenv("FUSION_T_SA", '{"type": "service_account",\n  "private_key":  "PLANTED-multiline-key"}')
    monkeypatch.setenv("FUSION_T_LONG", "sk-PLANTED-straddle-0123456789abcdef")
    multiline = read_secret("FUSION_T_SA", "FUSION_T_SA")
    straddling = read_secret("FUSION_T_LONG", "FUSION_T_LONG")
    code, line = describe_error(ValueError(f"vertex rejected credentials {multiline}"), argparse.Namespace())
    assert code == 2 and "PLANTED" not in line and "[redacted]" in line and "\n" not in line
    code, line = describe_error(ValueError("x" * 1970 + " key " + straddling + " tail"), argparse.Namespace())
    assert code == 2 and "PLANTED" not in line and "sk-" not in line and len(line) <= 2000


@pytest.mark.parametrize("verb", ["run", "synth"])
@pytest.mark.parametrize("n", ["0", "-1", "two"])
def test_a_bad_n_is_refused_by_the_option_not_replaced_by_the_default(tmp_path, capfd, verb, n):
    config = tmp_path / "pool.json"
    config.write_text(json.dumps(POOL))
    with pytest.raises(SystemExit) as caught:
        main([*_argv(verb, config, tmp_path), "--n", n])
    assert caught.value.code == 2
    err = capfd.readouterr().err
    assert "--n" in err and "expected a whole number >= 1" in err
