"""``fusion-dspy optimize`` refuses a malformed search option in argparse, naming the option."""

from __future__ import annotations

import json

import pytest

from fusion_dspy.cli import main

POOL = {"teachers": [{"name": "a", "model": "fake/a"}], "fusors": [{"name": "f", "model": "fake/f"}]}


@pytest.mark.parametrize(
    "option, value, problem",
    [
        ("--temperatures", "0.3,x", "expected 'keep' or comma-separated numbers"),
        ("--temperatures", "", "expected 'keep' or comma-separated numbers"),
        ("--modes", "fuse,bogus", "expected modes from fuse, select, auto"),
        ("--modes", ",", "expected modes from fuse, select, auto"),
    ],
)
def test_a_bad_search_option_is_refused_naming_the_option(tmp_path, capsys, option, value, problem):
    """`--temperatures 0.3,x` printed "error: could not convert string to float: 'x'" (no option named), and
    `--modes fuse,bogus` a pydantic dump of SearchSpace; both fail in argparse now, before any LM is built."""
    config = tmp_path / "pool.json"
    config.write_text(json.dumps(POOL))
    with pytest.raises(SystemExit) as caught:
        main(["optimize", "--program", "factqa", "--config", str(config), "--trials", "1", "--no-progress",
              option, value])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert option in err and problem in err


def test_search_options_parse_to_what_the_search_space_takes():
    import argparse

    from fusion_dspy.cli.optimize import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    required = ["--program", "p", "--config", "c"]
    defaults = parser.parse_args(required)
    assert defaults.temperatures == (0.3, 0.7, 1.0) and defaults.modes == ("fuse", "select", "auto")
    args = parser.parse_args([*required, "--temperatures", "keep", "--modes", " select , fuse "])
    assert args.temperatures is None and args.modes == ("select", "fuse")
