"""RayOptions: the one validated value behind ``synthesize_ray``, ``run_harness_ray`` and ``--ray`` (no Ray needed)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pydantic import ValidationError

from fusion_dspy.cli import main
from fusion_dspy.config import SettingsError
from fusion_dspy.ray_options import RayOptions

BAD = [
    ("actors", 0), ("actors", -3), ("actors", 1.5), ("actors", True), ("actors", "2"),
    ("concurrency", 0), ("concurrency", None), ("concurrency", 2.0),
    ("batch_size", 0), ("batch_size", "8"),
    ("actor_cpus", 0), ("actor_cpus", -0.5), ("actor_cpus", float("nan")), ("actor_cpus", float("inf")),
    ("actor_cpus", "1"), ("actor_cpus", False),
    ("address", ""), ("address", " auto"), ("address", "head"), ("address", "head:0"), ("address", "head:65536"),
    ("address", "head:port"), ("address", "ray://"), ("address", 6379),
]


def test_defaults():
    options = RayOptions()
    assert (options.address, options.actors, options.concurrency, options.batch_size, options.actor_cpus) == (
        None, 2, 8, None, 1.0)
    assert options.rows_per_batch == 8
    assert options.map_batches_kwargs() == {"batch_size": 8, "concurrency": 2, "num_cpus": 1.0}
    assert RayOptions(concurrency=3, batch_size=5).map_batches_kwargs() == {"batch_size": 5, "concurrency": 2,
                                                                             "num_cpus": 1.0}


@pytest.mark.parametrize("field, value", BAD)
def test_a_bad_value_names_the_field_and_what_to_pass(field, value):
    with pytest.raises(SettingsError) as caught:
        RayOptions(**{field: value})
    message = str(caught.value)
    assert message.startswith(f"RayOptions({field}={value!r}) is invalid")
    assert f"{field} must be" in message and "e.g." in message
    assert isinstance(caught.value, ValueError)  # the CLI reports it as bad input (exit 2)


def test_every_bad_field_is_reported_and_an_unknown_option_is_named():
    message = str(pytest.raises(SettingsError, RayOptions, actors=0, actor_cpus=0).value)
    assert "RayOptions(actors=0)" in message and "RayOptions(actor_cpus=0)" in message
    message = str(pytest.raises(SettingsError, RayOptions, actor=4).value)
    assert "RayOptions(actor=4) is invalid" in message and "no option 'actor'" in message and "actors" in message


@pytest.mark.parametrize("address, stored", [
    (None, None), ("local", None), ("auto", "auto"), ("ray://head:10001", "ray://head:10001"),
    ("10.0.0.1:6379", "10.0.0.1:6379"), ("head.example.com:6379", "head.example.com:6379"),
    ("[::1]:6379", "[::1]:6379"),
])
def test_addresses_ray_connects_to(address, stored):
    assert RayOptions(address=address).address == stored


def test_frozen_and_hashable():
    options = RayOptions(actors=4)
    with pytest.raises(ValidationError, match="frozen"):
        options.actors = 0
    assert options.actors == 4
    assert hash(options) == hash(RayOptions(actors=4)) and options == RayOptions(actors=4)
    assert options.replaced(concurrency=16) == RayOptions(actors=4, concurrency=16) and options.concurrency == 8
    with pytest.raises(SettingsError, match=r"RayOptions\(concurrency=0\) is invalid"):
        options.replaced(concurrency=0)


def test_round_trip():
    options = RayOptions(address="ray://head:10001", actors=16, concurrency=4, batch_size=32, actor_cpus=0.25)
    assert RayOptions(**options.model_dump()) == options
    assert RayOptions.model_validate_json(options.model_dump_json()) == options
    assert RayOptions(**json.loads(options.model_dump_json())) == options
    assert RayOptions(actor_cpus=2).actor_cpus == 2.0  # an int CPU count is a number too


def test_given_takes_a_ray_options_or_none_and_names_anything_else():
    options = RayOptions(actors=3)
    assert RayOptions.given(options, owner="synthesize_ray") is options
    assert RayOptions.given(None, owner="synthesize_ray") == RayOptions()
    with pytest.raises(SettingsError, match=r"synthesize_ray\(ray=\{'actors': 3\}\) is invalid: ray must be a "
                                            r"RayOptions, e\.g\. ray=RayOptions\("):
        RayOptions.given({"actors": 3}, owner="synthesize_ray")


def test_the_ray_functions_refuse_a_bad_ray_argument_before_any_work(tmp_path):
    from fusion_dspy.evaluate.ray import run_harness_ray
    from fusion_dspy.synth.ray import synthesize_ray

    def never():
        raise AssertionError("nothing may be built before the options are checked")

    with pytest.raises(SettingsError, match=r"synthesize_ray\(ray=4\) is invalid"):
        synthesize_ray(never, [], tmp_path / "s", ray=4)
    with pytest.raises(SettingsError, match=r"run_harness_ray\(ray='auto'\) is invalid"):
        run_harness_ray(lambda out_dir: never(), tmp_path / "e", ray="auto")
    assert not (tmp_path / "s").exists() and not (tmp_path / "e").exists()


def test_importing_the_options_and_the_ray_modules_never_imports_ray():
    code = ("import sys; import fusion_dspy.ray_options, fusion_dspy.synth.ray, fusion_dspy.evaluate.ray; "
            "from fusion_dspy.synth.ray import RayOptions as A; from fusion_dspy.evaluate.ray import RayOptions as B; "
            "assert A is B is fusion_dspy.ray_options.RayOptions; "
            "print(sorted(name for name in sys.modules if name == 'ray' or name.startswith('ray.')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("verb", ["eval", "synth"])
@pytest.mark.parametrize("flags, problem", [
    (["--ray", "nowhere"], "RayOptions(address='nowhere') is invalid"),
    (["--ray", "local", "--actors", "0"], "RayOptions(actors=0) is invalid: actors must be an int >= 1"),
    (["--ray", "auto", "--concurrency", "0"], "RayOptions(concurrency=0) is invalid: concurrency must be an int >= 1"),
])
def test_cli_bad_ray_flags_are_one_line_before_anything_is_read(tmp_path, capfd, verb, flags, problem):
    missing = str(tmp_path / "missing.toml")  # never read: the Ray options are checked first
    argv = {
        "eval": ["eval", "--task", "math", "--config", missing, "--data", str(tmp_path / "missing.jsonl"),
                 "--out", str(tmp_path / "e"), "--no-progress"],
        "synth": ["synth", "--prompts", str(tmp_path / "missing.jsonl"), "--config", missing,
                  "--out", str(tmp_path / "s"), "--no-progress"],
    }[verb]
    assert main([*argv, *flags]) == 2
    captured = capfd.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert "Traceback" not in captured.err
    assert len(lines) == 1 and lines[0].startswith("error: ") and problem in lines[0]
    assert "missing" not in lines[0]
