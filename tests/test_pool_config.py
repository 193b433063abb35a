from __future__ import annotations

import json

import pytest

from fusion_dspy import Teacher
from fusion_dspy.pool_config import LMSpec
from fusion_dspy.pool_config import load_pool_config

POOL_TOML = """
[[teachers]]
name = "a"
model = "fake/a"
temperature = 0.9
samples = 2

[[teachers]]
name = "remote"
model = "openai/gpt-4o-mini"
api_base = "http://127.0.0.1:9/v1"
api_key_env = "FUSION_TEST_KEY"

[[fusors]]
name = "f"
model = "fake/f"
temperature = 0.0
"""


def test_toml_pool_builds_teachers_and_fusors(tmp_path, monkeypatch):
    monkeypatch.setenv("FUSION_TEST_KEY", "sk-test-123")
    path = tmp_path / "pool.toml"
    path.write_text(POOL_TOML)
    config = load_pool_config(path)
    teachers = config.build_teachers()
    assert [t.name for t in teachers] == ["a", "remote"]
    assert all(isinstance(t, Teacher) for t in teachers)
    assert teachers[0].temperature == 0.9 and teachers[0].samples == 2
    remote = teachers[1].lm
    assert remote.model == "openai/gpt-4o-mini" and remote.kwargs.get("api_base") == "http://127.0.0.1:9/v1"
    assert list(config.build_fusors()) == ["f"]


def test_missing_key_variable_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("FUSION_TEST_KEY", raising=False)
    path = tmp_path / "pool.toml"
    path.write_text(POOL_TOML)
    with pytest.raises(ValueError, match=r"\$FUSION_TEST_KEY, which is not set"):
        load_pool_config(path).build_teachers()


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_json_and_yaml(tmp_path, suffix):
    data = {"teachers": [{"name": "a", "model": "fake/a"}], "fusors": [{"name": "f", "model": "fake/f"}]}
    path = tmp_path / f"pool{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(data))
    else:
        import yaml

        path.write_text(yaml.safe_dump(data))
    assert [t.name for t in load_pool_config(path).build_teachers()] == ["a"]


def test_api_keys_in_the_file_are_refused(tmp_path):
    path = tmp_path / "pool.json"
    path.write_text(json.dumps({"teachers": [{"name": "a", "model": "openai/x", "api_key": "sk-leak"}]}))
    with pytest.raises(ValueError, match="Keys never go in config files"):
        load_pool_config(path)
    with pytest.raises(ValueError, match="must not contain secrets"):
        LMSpec(name="a", model="openai/x", settings={"api_key": "sk-leak"})


@pytest.mark.parametrize(
    "data, match",
    [
        ({"teachers": []}, "at least 1"),
        ({"teachers": [{"name": "a", "model": "fake/a"}, {"name": "a", "model": "fake/b"}]}, "duplicate teacher"),
        ({"teachers": [{"name": "a", "model": "fake/a", "samples": 0}]}, "greater than or equal to 1"),
        ({"teachers": [{"name": "a", "model": "fake/a", "colour": "red"}]}, "Extra inputs"),
        ({"teachers": [{"name": "a", "model": "fake/a"}], "pools": {"p": ["a", "zz"]}}, r"unknown: \['zz'\]"),
        ({"teachers": [{"name": "a", "model": "fake/a"}], "pools": {"p": []}}, "must list distinct teacher"),
        ({"teachers": [{"name": "a", "model": "fake/a"}], "pools": {"p": ["a", "a"]}}, "must list distinct teacher"),
    ],
)
def test_invalid_pools(tmp_path, data, match):
    path = tmp_path / "pool.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=match):
        load_pool_config(path)


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_pool_config(tmp_path / "nope.toml")
    path = tmp_path / "pool.ini"
    path.write_text("x")
    with pytest.raises(ValueError, match="Unknown pool config format"):
        load_pool_config(path)


def test_named_pools_select_teachers_in_file_order(tmp_path):
    path = tmp_path / "pool.toml"
    path.write_text(POOL_TOML.replace('api_key_env = "FUSION_TEST_KEY"\n', "") + """
[[teachers]]
name = "b"
model = "fake/b"

[pools]
fakes = ["b", "a"]
only-b = ["b"]
""")
    config = load_pool_config(path)
    assert [t.name for t in config.build_teachers("fakes")] == ["a", "b"]  # file order, not pool order
    assert [t.name for t in config.build_teachers("only-b")] == ["b"]
    assert len(config.build_teachers()) == 3
    with pytest.raises(ValueError, match=r"Unknown pool 'nope'; the config names \['fakes', 'only-b'\]"):
        config.build_teachers("nope")
