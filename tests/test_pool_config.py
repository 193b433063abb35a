from __future__ import annotations

import json

import pytest

from fusion_dspy import Teacher
from fusion_dspy.pool_config import ConfigError
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
    with pytest.raises(ValueError, match=r"teachers\[0\]\.api_key holds a credential") as caught:
        load_pool_config(path)
    assert "sk-leak" not in str(caught.value)
    with pytest.raises(ValueError, match=r"settings\.api_key holds a credential") as caught:
        LMSpec(name="a", model="openai/x", settings={"api_key": "sk-leak"})
    assert "sk-leak" not in str(caught.value)


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
    with pytest.raises(ValueError, match="unknown pool config format"):
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


# -- the secrets rule: every setting that carries a credential comes from the environment ----------

SECRET = "sk-PLANTED-0123456789abcdef"

LITERAL_CREDENTIALS = [
    ({"api_key": SECRET}, "teachers[0].api_key"),
    ({"settings": {"api_key": SECRET}}, "teachers[0].settings.api_key"),
    ({"settings": {"openai_api_key": SECRET}}, "teachers[0].settings.openai_api_key"),
    ({"settings": {"extra_headers": {"Authorization": f"Bearer {SECRET}"}}},
     "teachers[0].settings.extra_headers.Authorization"),
    ({"settings": {"extra_headers": {"X-Api-Key": SECRET}}}, "teachers[0].settings.extra_headers.X-Api-Key"),
    ({"settings": {"access_token": SECRET}}, "teachers[0].settings.access_token"),
    ({"settings": {"client_secret": SECRET}}, "teachers[0].settings.client_secret"),
    ({"settings": {"password": SECRET}}, "teachers[0].settings.password"),
    ({"settings": {"aws_credentials": {"id": "x", "value": SECRET}}}, "teachers[0].settings.aws_credentials"),
    ({"api_base": f"https://u:{SECRET}@host/v1"}, "teachers[0].api_base"),
    ({"api_base": f"https://{SECRET}@host/v1"}, "teachers[0].api_base"),
    ({"settings": {"proxy": f"http://me:{SECRET}@proxy:3128"}}, "teachers[0].settings.proxy"),
    ({"api_base": f"https://host/v1?api_key={SECRET}"}, "teachers[0].api_base"),
    # plural and camelCase names carry credentials too
    ({"settings": {"api_keys": [SECRET]}}, "teachers[0].settings.api_keys"),
    ({"settings": {"HFToken": SECRET}}, "teachers[0].settings.HFToken"),
    ({"settings": {"OpenAIKey": SECRET}}, "teachers[0].settings.OpenAIKey"),
    ({"settings": {"AUTHTOKEN": SECRET}}, "teachers[0].settings.AUTHTOKEN"),
    # a *_env setting names ONE variable: a table or list under it is a literal value
    ({"settings": {"extra_headers_env": {"Authorization": f"Bearer {SECRET}"}}},
     "settings.extra_headers_env"),
    ({"settings": {"api_keys_env": [SECRET]}}, "settings.api_keys_env"),
]


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".toml"])
@pytest.mark.parametrize("extra, location", LITERAL_CREDENTIALS)
def test_literal_credentials_are_refused_without_showing_them(tmp_path, suffix, extra, location):
    entry = {"name": "remote", "model": "openai/gpt-4o-mini", **extra}
    data = {"teachers": [entry]}
    path = tmp_path / f"pool{suffix}"
    if suffix == ".json":
        path.write_text(json.dumps(data))
    elif suffix == ".yaml":
        import yaml

        path.write_text(yaml.safe_dump(data))
    else:
        path.write_text(_toml(data))
    with pytest.raises(ValueError) as caught:
        load_pool_config(path)
    message = str(caught.value)
    assert location in message and str(path) in message and "_env" in message
    assert SECRET not in message and SECRET not in repr(caught.value)
    # The same rule for entries built through the API (what pydantic prints must not show it either).
    with pytest.raises(ValueError) as caught:
        LMSpec(**entry)
    assert location.removeprefix("teachers[0].") in str(caught.value)
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value)


def _toml(data):
    lines = []
    for entry in data["teachers"]:
        lines.append("[[teachers]]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in entry.items() if not isinstance(v, dict)]
        for key, value in entry.items():
            if isinstance(value, dict):
                lines.append(f"[teachers.{key}]")
                for k, v in value.items():
                    if isinstance(v, dict):
                        inner = ", ".join(f"{json.dumps(a)} = {json.dumps(b)}" for a, b in v.items())
                        lines.append(f"{json.dumps(k)} = {{ {inner} }}")
                    else:
                        lines.append(f"{json.dumps(k)} = {json.dumps(v)}")
    return "\n".join(lines) + "\n"


PASTED_KEYS = [
    SECRET, "sk_live_0123456789abcdefghijkl", "Bearer abc", "my key", "", "hf_abcdefgh",
    # real-looking tokens that are valid variable-name syntax
    "hf_AbCdEfGhIjKlMnOpQrStUvWxYzAbCdEfGh", "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",
    "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP0123456789abcdefgh",
    "AKIAIOSFODNN7EXAMPLE", "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7", "0123456789abcdef0123456789abcdef",
    "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", "xoxb1234567890abcdefghij",
    "aBcDeFgHiJkLmNoPqRsTuVwXyZ",
]


@pytest.mark.parametrize("name", PASTED_KEYS)
def test_a_key_pasted_as_the_variable_name_is_refused_without_showing_it(name):
    with pytest.raises(ValueError, match="must be the NAME of an environment variable") as caught:
        LMSpec(name="a", model="openai/x", api_key_env=name)
    if name:
        assert name not in str(caught.value)


@pytest.mark.parametrize(
    "name",
    ["OPENAI_API_KEY", "HF_TOKEN", "HF_API_KEY", "HUGGINGFACE_API_KEY", "GHP_TOKEN", "SK_KEY", "AKIA_KEY_ID",
     "GITHUB_PAT", "AZURE_OPENAI_API_KEY_westeurope", "OPENAI_API_KEY_20240115_PROD", "Azure_OpenAI_Api_Key_Prod",
     "AzureOpenAIKeyWestEurope", "hf_token_var", "hf_token", "AWS_SECRET_ACCESS_KEY", "GOOGLE_APPLICATION_CREDENTIALS",
     "MISTRAL_API_KEY_2", "_PRIVATE_KEY", "key"],
)
def test_ordinary_variable_names_are_accepted(name):
    assert LMSpec(name="a", model="openai/x", api_key_env=name).api_key_env == name
    assert LMSpec(name="a", model="openai/x", settings={"extra_headers": {"Authorization_env": name}})


@pytest.mark.parametrize(
    "name, carries",
    [
        ("api_key", True), ("apiKey", True), ("APIKey", True), ("x-api-key", True), ("ACCESS_TOKEN", True),
        ("api_keys", True), ("HFToken", True), ("OpenAIKey", True), ("AUTHTOKEN", True), ("client_secrets", True),
        ("Cookies", True), ("passwords", True),
        ("max_tokens", True),  # a plural of token; numbers are never refused (see the test below)
        ("tokenizer", False), ("author", False), ("monkey", False), ("keyword", False), ("top_p", False),
        ("num_retries", False), ("OpenAIModel", False),
    ],
)
def test_credential_names_include_plurals_and_camel_case(name, carries):
    from fusion_dspy.credentials import is_credential_name

    assert is_credential_name(name) is carries


def test_ordinary_settings_are_not_mistaken_for_credentials():
    spec = LMSpec(name="a", model="openai/x", api_key_env="OPENAI_API_KEY",
                  settings={"max_tokens": 5, "top_p": 0.9, "num_retries": 0, "extra_headers": {"X-Trace": "1"},
                            "auth_retries": 2, "use_token_cache": False, "api_key": None})
    assert spec.settings["max_tokens"] == 5


@pytest.mark.parametrize(
    "settings, where",
    [
        ({"_env": "FUSION_TEST_KEY"}, "settings._env"),
        ({"_ENV": "FUSION_TEST_KEY"}, "settings._ENV"),
        ({"extra_headers": {"_env": "FUSION_TEST_AUTH"}}, "settings.extra_headers._env"),
        ({"_env": {"Authorization": f"Bearer {SECRET}"}}, "settings._env"),
    ],
)
def test_a_bare_env_key_names_no_setting_and_is_refused(tmp_path, monkeypatch, settings, where):
    from fusion_dspy.credentials import resolve_env

    monkeypatch.setenv("FUSION_TEST_KEY", SECRET)
    monkeypatch.setenv("FUSION_TEST_AUTH", SECRET)
    path = tmp_path / "pool.json"
    path.write_text(json.dumps({"teachers": [{"name": "a", "model": "openai/x", "settings": settings}]}))
    with pytest.raises(ConfigError) as caught:
        load_pool_config(path)
    message = str(caught.value)
    assert where in message and "api_key_env" in message  # where it is, and what to write instead
    assert SECRET not in message
    with pytest.raises(ValueError) as caught:
        LMSpec(name="a", model="openai/x", settings=settings)
    assert where in str(caught.value) and SECRET not in str(caught.value)
    # The rule holds where variables are read too: a bare _env never reaches the LM as a setting.
    with pytest.raises(ValueError, match=r"_env"):
        resolve_env(settings, "settings")


def test_credentials_from_the_environment_reach_the_lm(monkeypatch):
    monkeypatch.setenv("FUSION_TEST_AUTH", f"Bearer {SECRET}")
    monkeypatch.setenv("FUSION_TEST_KEY", SECRET)
    monkeypatch.setenv("FUSION_TEST_BASE", f"https://u:{SECRET}@host/v1")
    spec = LMSpec(name="a", model="openai/x", api_key_env="FUSION_TEST_KEY", api_base_env="FUSION_TEST_BASE",
                  settings={"extra_headers": {"Authorization_env": "FUSION_TEST_AUTH", "X-Trace": "1"}})
    lm = spec.build()
    assert lm.kwargs["extra_headers"] == {"Authorization": f"Bearer {SECRET}", "X-Trace": "1"}
    assert lm.kwargs["api_key"] == SECRET and lm.kwargs["api_base"] == f"https://u:{SECRET}@host/v1"
    monkeypatch.delenv("FUSION_TEST_AUTH")
    with pytest.raises(ValueError, match=r"Authorization_env reads \$FUSION_TEST_AUTH, which is not set"):
        spec.build()


def test_redact_blanks_secrets_read_from_the_environment(monkeypatch):
    from fusion_dspy.credentials import redact

    monkeypatch.setenv("FUSION_TEST_KEY", SECRET)
    LMSpec(name="a", model="openai/x", api_key_env="FUSION_TEST_KEY").build()
    assert SECRET not in redact(f"401: bad key {SECRET} at https://u:pw@host/v1")
    assert "pw@" not in redact("https://u:pw@host/v1")


@pytest.mark.parametrize(
    "suffix, text, match",
    [
        (".yaml", "teachers:\n  - name: a\n    model: [unclosed\n", r"not valid YAML .*line \d+, column \d+"),
        (".toml", "[[teachers]\nname = 'a'\n", r"not valid TOML"),
        (".json", '{"teachers": [', r"not valid JSON .*line 1"),
        (".json", "[1, 2]", r"expected a table/mapping"),
    ],
)
def test_unparsable_config_is_one_line_naming_the_file(tmp_path, suffix, text, match):
    path = tmp_path / f"pool{suffix}"
    path.write_text(text)
    with pytest.raises(ValueError, match=match) as caught:
        load_pool_config(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_binary_config_names_the_file(tmp_path):
    path = tmp_path / "pool.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    with pytest.raises(ValueError, match="not a UTF-8 text file") as caught:
        load_pool_config(path)
    assert str(path) in str(caught.value)


def test_validation_errors_are_one_line_with_locations(tmp_path):
    path = tmp_path / "pool.json"
    path.write_text(json.dumps({"teachers": [{"name": "a", "model": "fake/a", "samples": 0, "colour": "red"}]}))
    with pytest.raises(ValueError) as caught:
        load_pool_config(path)
    message = str(caught.value)
    assert "\n" not in message and "teachers[0].samples" in message and "teachers[0].colour" in message


def test_a_saved_program_never_holds_a_credential(tmp_path, monkeypatch):
    from fusion_dspy import Fuse

    monkeypatch.setenv("FUSION_TEST_KEY", SECRET)
    monkeypatch.setenv("FUSION_TEST_AUTH", f"Bearer {SECRET}")
    path = tmp_path / "pool.json"
    path.write_text(json.dumps({
        "teachers": [{"name": "r", "model": "openai/x", "api_key_env": "FUSION_TEST_KEY",
                      "settings": {"extra_headers": {"Authorization_env": "FUSION_TEST_AUTH"}}},
                     {"name": "a", "model": "fake/a"}],
        "fusors": [{"name": "f", "model": "fake/f"}],
    }))
    config = load_pool_config(path)
    fuse = Fuse("question -> answer", 2, teachers=config.build_teachers(), fusor=config.build_fusors()["f"])
    fuse.save(tmp_path / "program.json")
    saved = (tmp_path / "program.json").read_text()
    assert SECRET not in saved and json.loads(saved)["config"]["teachers"] == ["r", "a"]


def test_a_report_never_quotes_a_credential_read_from_the_environment(monkeypatch):
    from fusion_dspy import Fuse
    from fusion_dspy import Teacher
    from fusion_dspy.testing import FakeEngine
    from fusion_dspy.testing import FakeLMError

    monkeypatch.setenv("FUSION_TEST_KEY", SECRET)
    LMSpec(name="r", model="openai/x", api_key_env="FUSION_TEST_KEY").build()

    def echo_the_key(request):
        raise FakeLMError(f"401 Unauthorized: invalid key {SECRET}")

    leaky = FakeEngine(name="leaky", responder=echo_the_key)
    fuse = Fuse("question -> answer", 2, teachers=[Teacher(leaky.lm(), name="leaky"), FakeEngine().lm()],
                fusor=FakeEngine().lm())
    report = fuse(question="q").fusion
    failed = next(c for c in report.candidates if c.teacher == "leaky")
    assert "401 Unauthorized" in failed.error and SECRET not in report.model_dump_json()


# -- strict entries: what the file says is what runs, or the file is refused ------------------------

_ENTRY = '[[teachers]]\nname = "a"\nmodel = "fake/a"\n'


@pytest.mark.parametrize(
    "suffix, text, match",
    [
        (".toml", _ENTRY + "samples = true\n", r"teachers\[0\]\.samples: Input should be a valid integer"),
        (".toml", _ENTRY + "samples = 2.0\n", r"teachers\[0\]\.samples: Input should be a valid integer"),
        (".toml", _ENTRY + "temperature = true\n", r"teachers\[0\]\.temperature: Input should be a valid number"),
        (".toml", _ENTRY + 'temperature = "0.9"\n', r"teachers\[0\]\.temperature: Input should be a valid number"),
        (".toml", _ENTRY + "temperature = inf\n", r"teachers\[0\]\.temperature: Input should be a finite number"),
        (".toml", _ENTRY + "temperature = nan\n", r"teachers\[0\]\.temperature: Input should be a finite number"),
        (".toml", _ENTRY + "max_tokens = true\n", r"teachers\[0\]\.max_tokens: Input should be a valid integer"),
        (".toml", _ENTRY + 'cache = "no"\n', r"teachers\[0\]\.cache: Input should be a valid boolean"),
        (".toml", '[[teachers]]\nname = "  "\nmodel = "fake/a"\n', r"teachers\[0\]\.name: String should have at least"),
        (".toml", '[[teachers]]\nname = "a"\nmodel = " "\n', r"teachers\[0\]\.model: String should have at least"),
        (".toml", _ENTRY + "temperature = 0.0\n[teachers.settings]\ntemperature = 1.5\n",
         r"teachers\[0\]: LM 'a' settings\.temperature duplicates the entry's temperature"),
        (".toml", _ENTRY + "[teachers.settings]\ncache = false\n",
         r"teachers\[0\]: LM 'a' settings\.cache duplicates the entry's cache"),
        (".json", '{"teachers": [{"name": "a", "model": "fake/a", "temperature": 0.2, "temperature": 5}]}',
         r"duplicate key 'temperature' in teachers\[0\]"),
        (".json", '{"teachers": [{"name": "a", "model": "fake/a"}], "teachers": []}', r"duplicate key 'teachers'"),
        (".yaml", "teachers:\n  - name: a\n    model: fake/a\n    samples: 2\n    samples: 1\n",
         r"duplicate key 'samples' at line 5, column 5"),
    ],
)
def test_config_values_are_taken_as_written_or_refused(tmp_path, suffix, text, match):
    path = tmp_path / f"pool{suffix}"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as caught:
        load_pool_config(path)
    assert str(caught.value).startswith(f"{path}: ") and "\n" not in str(caught.value)


def test_names_and_models_are_stripped_and_unset_settings_stay_free(tmp_path):
    path = tmp_path / "pool.toml"
    path.write_text('[[teachers]]\nname = " a "\nmodel = " fake/a "\nsamples = 2\ntemperature = 1\n'
                    '[[fusors]]\nname = "f"\nmodel = "fake/f"\n[fusors.settings]\ntemperature = 0.0\n'
                    'max_tokens = 64\n')
    config = load_pool_config(path)
    teacher = config.teachers[0]
    assert (teacher.name, teacher.model, teacher.samples, teacher.temperature) == ("a", "fake/a", 2, 1.0)
    # a fusor's temperature is not set at the top level, so its settings may carry it
    assert config.fusors[0].build().kwargs["temperature"] == 0.0


def test_a_credential_in_the_file_is_a_config_error(tmp_path):
    path = tmp_path / "pool.json"
    path.write_text(json.dumps({"teachers": [{"name": "a", "model": "openai/x", "api_key": SECRET}]}))
    with pytest.raises(ConfigError, match=r"teachers\[0\]\.api_key holds a credential"):
        load_pool_config(path)
