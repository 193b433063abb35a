from __future__ import annotations

import json

import datasets
import pytest

from fusion_dspy import Fuse
from fusion_dspy import Teacher
from fusion_dspy.cli import main
from fusion_dspy.synth import load_prompts
from fusion_dspy.synth import make_prompts
from fusion_dspy.synth import read_records
from fusion_dspy.synth import synthesize
from fusion_dspy.testing import FakeEngine


def make_fuse(fail=False):
    a = FakeEngine(name="a", responder=lambda r: {"response": f"a says {r.inputs['prompt']}"})
    b = FakeEngine(name="b", responder=lambda r: {"response": f"b{r.seed} says {r.inputs['prompt']}"})
    fusor = FakeEngine(name="f", responder=lambda r: {"comparison": "b is longer", "response": "fused!"}, fail=fail)
    fuse = Fuse("prompt -> response", 3, teachers=[Teacher(a.lm(), name="a"), Teacher(b.lm(), name="b", samples=2)],
                fusor=fusor.lm())
    return fuse, (a, b, fusor)


def prompts(count):
    return make_prompts([{"prompt": f"p{i}"} for i in range(count)], ["prompt"])


def test_records_carry_full_provenance_and_the_dataset_is_exported(tmp_path):
    fuse, _ = make_fuse()
    result = synthesize(fuse, prompts(5), tmp_path, also_select="mbr", shard_size=2, output_format="chat",
                        progress=False)
    assert (result.generated, result.resumed, result.complete) == (5, 0, True)
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == [
        "shard-00000.jsonl", "shard-00001.jsonl", "shard-00002.jsonl"]
    dataset = datasets.load_from_disk(str(tmp_path / "dataset"))
    assert dataset.num_rows == 5 and dataset["prompt"] == [f"p{i}" for i in range(5)]
    row = dataset[0]
    assert row["fused_output"] == "fused!" and row["path"] == "fuse" and row["comparison"] == "b is longer"
    assert [c["teacher"] for c in row["candidates"]] == ["a", "b", "b"]
    assert row["candidates"][1]["output"] == "b0 says p0" and row["candidates"][2]["output"] == "b1 says p0"
    assert row["selector"] == "mbr" and row["selected_output"] in {c["output"] for c in row["candidates"]}
    assert row["config_hash"] == result.config_hash and row["input_tokens"] > 0 and row["calls"] == 4
    assert json.loads(row["report_json"])["fusor"]["lm"]
    assert datasets.Dataset.from_parquet(str(tmp_path / "data.parquet")).num_rows == 5
    assert len((tmp_path / "data.jsonl").read_text().splitlines()) == 5
    sft = [json.loads(line) for line in (tmp_path / "sft.jsonl").read_text().splitlines()]
    assert sft[0]["messages"] == [{"role": "user", "content": "p0"}, {"role": "assistant", "content": "fused!"}]
    # The Best-of-N pick did not leave the Fuse in select mode with another fallback selector.
    assert fuse.mode == "fuse" and fuse.selector.name == "mbr"


def test_rerun_skips_finished_prompts_and_reuses_draws(tmp_path):
    fuse, _ = make_fuse()
    synthesize(fuse, prompts(3), tmp_path, progress=False)
    fuse, (a, b, fusor) = make_fuse()
    result = synthesize(fuse, prompts(5), tmp_path, progress=False)  # two prompts appended to the file
    assert (result.generated, result.resumed) == (2, 3)
    assert a.calls == 2 and b.calls == 4 and fusor.calls == 2
    assert [r["prompt"] for r in read_records(tmp_path)] == [f"p{i}" for i in range(5)]


def test_failed_prompts_are_retried_and_block_the_export(tmp_path):
    fuse, _ = make_fuse()
    fuse.configure(min_candidates=3)
    fuse.teachers[0].lm.engine.fail = lambda r: r.inputs["prompt"] == "p1"
    result = synthesize(fuse, prompts(3), tmp_path, progress=False)
    assert result.failed == [prompts(3)[1].id] and not result.complete
    assert not (tmp_path / "dataset").exists()
    fuse.teachers[0].lm.engine.fail = False
    result = synthesize(fuse, prompts(3), tmp_path, progress=False)
    assert (result.generated, result.resumed, result.complete) == (1, 2, True)


def test_a_failed_fusor_still_yields_a_record_with_its_fallback(tmp_path):
    fuse, _ = make_fuse(fail=True)
    synthesize(fuse, prompts(1), tmp_path, progress=False)
    [record] = read_records(tmp_path)
    assert record["path"] == "select" and "fusor failed" in record["fallback"]


def test_another_configuration_is_refused(tmp_path):
    fuse, _ = make_fuse()
    synthesize(fuse, prompts(1), tmp_path, progress=False)
    fuse.configure(n=2)
    with pytest.raises(ValueError, match="another configuration"):
        synthesize(fuse, prompts(1), tmp_path, progress=False)


def test_prompt_ids(tmp_path):
    rows = [{"prompt": "x"}, {"prompt": "x"}, {"prompt": "y", "id": "custom"}]
    ids = [p.id for p in make_prompts(rows, ["prompt"])]
    assert ids[0] != ids[1] and ids[1].startswith(ids[0]) and ids[2] == "custom"
    assert [p.id for p in make_prompts(rows[1:], ["prompt"])][1] == "custom"
    with pytest.raises(ValueError, match="Duplicate prompt id"):
        make_prompts([{"prompt": "a", "id": 1}, {"prompt": "b", "id": 1}], ["prompt"])
    with pytest.raises(ValueError, match="needs \\['question', 'context'\\]"):
        make_prompts([{"prompt": "a"}], ["question", "context"])
    path = tmp_path / "p.jsonl"
    path.write_text('"just a string"\n\n{"question": "q", "context": "c"}\n')
    with pytest.raises(ValueError):
        load_prompts(path, ["question", "context"])
    path.write_text('{"question": "q", "context": "c"}\n')
    assert load_prompts(path, ["question", "context"])[0].inputs == {"question": "q", "context": "c"}


def test_cli_synth(tmp_path, capsys):
    pool = {"teachers": [{"name": "a", "model": "fake/a"}, {"name": "b", "model": "fake/b", "samples": 2}],
            "fusors": [{"name": "f", "model": "fake/f"}]}
    (tmp_path / "pool.json").write_text(json.dumps(pool))
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"prompt": f"Say {i}"}) + "\n" for i in range(4)))
    argv = ["synth", "--prompts", str(tmp_path / "prompts.jsonl"), "--config", str(tmp_path / "pool.json"),
            "--out", str(tmp_path / "ds"), "--also-select", "--format", "chat", "--no-progress"]
    assert main(argv) == 0
    assert "4 generated, 0 resumed" in capsys.readouterr().out
    assert main(argv) == 0
    assert "0 generated, 4 resumed" in capsys.readouterr().out
    assert len((tmp_path / "ds" / "sft.jsonl").read_text().splitlines()) == 4


def test_cli_synth_with_a_named_pool(tmp_path, capsys):
    pool = {"teachers": [{"name": "a", "model": "fake/a"}, {"name": "b", "model": "fake/b"}],
            "fusors": [{"name": "f", "model": "fake/f"}], "pools": {"only-a": ["a"]}}
    (tmp_path / "pool.json").write_text(json.dumps(pool))
    (tmp_path / "prompts.jsonl").write_text(json.dumps({"prompt": "Say hi"}) + "\n")
    argv = ["synth", "--prompts", str(tmp_path / "prompts.jsonl"), "--config", str(tmp_path / "pool.json"),
            "--out", str(tmp_path / "ds"), "--pool", "only-a", "--no-progress"]
    assert main(argv) == 0
    (row,) = [json.loads(line) for line in (tmp_path / "ds" / "data.jsonl").read_text().splitlines()]
    assert {c["teacher"] for c in row["candidates"]} == {"a"}
