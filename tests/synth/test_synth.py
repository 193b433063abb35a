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
    b = FakeEngine(name="b", responder=lambda r: {"response": f"b{r.sample('b')} says {r.inputs['prompt']}"})
    fusor = FakeEngine(name="f", responder=lambda r: {"comparison": "b is longer", "response": "fused!"}, fail=fail)
    # guard=False: the records must carry the fusor's answers (a guard would return a teacher's).
    fuse = Fuse("prompt -> response", 3, teachers=[Teacher(a.lm(), name="a"), Teacher(b.lm(), name="b", samples=2)],
                fusor=fusor.lm(), guard=False)
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


def test_the_export_holds_only_this_runs_prompts_in_this_runs_order(tmp_path, caplog):
    """Resumed with another prompt list, the export leaves out the records of prompts no longer in it
    (logged) and numbers the rest by the new list: no stale rows, no duplicate indices."""
    fuse, _ = make_fuse()
    synthesize(fuse, prompts(3), tmp_path, progress=False)
    fuse, (a, _, _) = make_fuse()
    with caplog.at_level("INFO", logger="fusion_dspy.synth"):
        result = synthesize(fuse, make_prompts([{"prompt": "q1"}, {"prompt": "p0"}], ["prompt"]), tmp_path,
                            progress=False)
    assert (result.generated, result.resumed, result.complete, a.calls) == (1, 1, True, 1)
    dataset = datasets.load_from_disk(str(tmp_path / "dataset"))
    assert dataset["prompt"] == ["q1", "p0"] and dataset["index"] == [0, 1]
    assert len((tmp_path / "data.jsonl").read_text().splitlines()) == 2
    assert "2 record(s) of prompts not in this run left out" in caplog.text
    assert len(read_records(tmp_path)) == 4  # the shards keep every record


def test_also_select_records_its_selectors_own_lm_calls_and_the_result_counts_them(tmp_path):
    """An LLM judge picking the Best-of-N answer pays for its calls: they are in the record's ``selector_*``
    columns (the fused answer's own ``input_tokens``/``calls`` stay as they were) and in SynthResult's tokens."""
    from fusion_dspy.selectors.judge import LLMJudge

    fuse, _ = make_fuse()
    judge_engine = FakeEngine(name="j", responder=lambda r: {"reasoning": "ok", "score": 7})
    result = synthesize(fuse, prompts(2), tmp_path / "judge", also_select=LLMJudge(lm=judge_engine.lm()),
                        progress=False)
    records = read_records(tmp_path / "judge")
    assert sum(r["selector_calls"] for r in records) == judge_engine.calls == 2 * 3  # one call per candidate
    assert all(r["selector_input_tokens"] > 0 and r["selector_output_tokens"] > 0 for r in records)
    assert all(r["calls"] == 4 for r in records)  # 3 draws and the fusor: the fused answer's cost, unchanged
    assert result.input_tokens == sum(r["input_tokens"] + r["selector_input_tokens"] for r in records)
    assert result.output_tokens == sum(r["output_tokens"] + r["selector_output_tokens"] for r in records)
    assert datasets.load_from_disk(str(tmp_path / "judge" / "dataset"))["selector_calls"] == [3, 3]
    fuse, _ = make_fuse()
    synthesize(fuse, prompts(1), tmp_path / "mbr", also_select="mbr", progress=False)
    synthesize(make_fuse()[0], prompts(1), tmp_path / "none", progress=False)
    for name in ("mbr", "none"):  # no LM call to count
        [record] = read_records(tmp_path / name)
        assert [record[f"selector_{k}"] for k in ("input_tokens", "output_tokens", "calls")] == [0, 0, 0]


def test_a_failing_prompt_becomes_a_failed_row_after_bounded_attempts_and_the_run_completes(tmp_path):
    fuse, (a, _, _) = make_fuse()
    fuse.configure(min_candidates=3)
    fuse.teachers[0].lm.engine.fail = lambda r: r.inputs["prompt"] == "p1"
    result = synthesize(fuse, prompts(3), tmp_path, progress=False, max_attempts=2)
    bad = prompts(3)[1].id
    assert result.failed == [bad] and result.failed_total == 1 and result.complete and result.generated == 2
    assert sum(r.inputs["prompt"] == "p1" for r in a.requests) == 2  # bounded: one teacher call per attempt
    [row] = [json.loads(line) for line in (tmp_path / "failed.jsonl").read_text().splitlines()]
    assert row["id"] == bad and row["attempts"] == 2 and row["error_type"] == "CandidatesExhaustedError"
    assert "told to fail" in row["error"]  # the cause, not just its first line
    assert datasets.load_from_disk(str(tmp_path / "dataset"))["prompt"] == ["p0", "p2"]
    # A resume completes without touching the failed prompt...
    fuse, (a, b, fusor) = make_fuse()
    fuse.configure(min_candidates=3)
    result = synthesize(fuse, prompts(3), tmp_path, progress=False)
    assert (result.generated, result.resumed, result.failed_total, result.complete) == (0, 2, 1, True)
    assert a.calls + b.calls + fusor.calls == 0
    # ...and retry_failed tries it again.
    result = synthesize(fuse, prompts(3), tmp_path, progress=False, retry_failed=True)
    assert (result.generated, result.resumed, result.failed_total, result.failed) == (1, 2, 0, [])
    assert datasets.load_from_disk(str(tmp_path / "dataset"))["prompt"] == ["p0", "p1", "p2"]


def test_a_lone_surrogate_does_not_put_synth_into_a_crash_loop(tmp_path):
    """Issue 10's repro: an answer holding "\\ud800" (what json.loads makes of an API reply) made every
    run stop at that prompt. Now the prompt ends as a record or as a failed row, and the run completes."""
    def make():
        fuse, engines = make_fuse()
        engines[0].responder = lambda r: {"response": "bad \ud800" if r.inputs["prompt"] == "p1" else "ok"}
        return fuse, engines
    fuse, _ = make()
    first = synthesize(fuse, prompts(3), tmp_path, progress=False)
    assert first.complete and first.generated + first.failed_total == 3
    fuse, engines = make()
    again = synthesize(fuse, prompts(3), tmp_path, progress=False)
    assert again.complete and again.generated == 0 and sum(e.calls for e in engines) == 0
    # With text safety at the boundary the answer is cleaned (U+FFFD) and the prompt becomes a record.
    assert first.generated == 3 and first.failed_total == 0
    assert not (tmp_path / "failed.jsonl").exists() or not (tmp_path / "failed.jsonl").read_text().strip()


def test_concurrent_run_writes_the_same_records_as_a_sequential_one(tmp_path):
    import threading
    import time

    state = {"now": 0, "max": 0}
    lock = threading.Lock()

    def slow_fusor(request):
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.03)
        with lock:
            state["now"] -= 1
        return {"comparison": "c", "response": "fused " + request.inputs["prompt"]}

    def run(out, concurrency):
        fuse, (_, _, fusor) = make_fuse()
        fusor.responder = slow_fusor
        result = synthesize(fuse, prompts(24), out, also_select="mbr", shard_size=5, progress=False,
                            concurrency=concurrency)
        return result, read_records(out)

    sequential, expected = run(tmp_path / "seq", 1)
    assert state["max"] == 1
    concurrent, got = run(tmp_path / "conc", 8)
    assert state["max"] > 1  # prompts really overlapped
    assert (concurrent.generated, concurrent.complete) == (24, True)
    keep = ("id", "index", "prompt", "fused_output", "selected_output", "input_tokens", "output_tokens", "calls")
    assert [{k: r[k] for k in keep} for r in got] == [{k: r[k] for k in keep} for r in expected]
    assert concurrent.input_tokens == sequential.input_tokens > 0


def test_a_hard_quota_stops_the_run_cleanly_and_it_resumes(tmp_path):
    from dspy import lm15

    quota = {"out": True}

    def make():
        fuse, engines = make_fuse()
        base = engines[1].responder

        def respond(request):
            if quota["out"] and int(request.inputs["prompt"][1:]) >= 4:
                raise lm15.BillingError("You exceeded your current quota")
            return base(request)

        engines[1].responder = respond
        return fuse, engines

    fuse, _ = make()
    result = synthesize(fuse, prompts(12), tmp_path, progress=False, concurrency=2)
    assert result.stopped and "LMBillingError" in result.stopped and not result.complete
    assert result.failed == [] and not (tmp_path / "dataset").exists()
    assert 4 <= result.generated < 12
    quota["out"] = False
    fuse, _ = make()
    result = synthesize(fuse, prompts(12), tmp_path, progress=False, concurrency=2)
    assert result.complete and result.stopped is None
    ids = [r["id"] for r in read_records(tmp_path)]
    assert len(ids) == 12 and sum(1 for p in (tmp_path / "shards").glob("*.jsonl")
                                  for _ in p.read_text().splitlines()) == 12


def test_bad_synth_arguments(tmp_path):
    fuse, _ = make_fuse()
    for kwargs, message in (({"concurrency": 0}, "concurrency must be an int >= 1"),
                            ({"max_attempts": 0}, "max_attempts must be an int >= 1"),
                            ({"shard_size": 0}, "shard_size must be an int >= 1")):
        with pytest.raises(ValueError, match=message):
            synthesize(fuse, prompts(1), tmp_path, progress=False, **kwargs)


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


def test_cli_synth_with_limits_and_concurrency(tmp_path, capsys):
    pool = {"teachers": [{"name": "a", "model": "fake/a", "limits": {"max_concurrent": 2}},
                         {"name": "b", "model": "fake/b", "samples": 2}],
            "fusors": [{"name": "f", "model": "fake/f", "limits": {"requests_per_minute": 6000}}]}
    (tmp_path / "pool.json").write_text(json.dumps(pool))
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"prompt": f"Say {i}"}) + "\n" for i in range(9)))
    argv = ["synth", "--prompts", str(tmp_path / "prompts.jsonl"), "--config", str(tmp_path / "pool.json"),
            "--out", str(tmp_path / "ds"), "--no-progress", "--concurrency", "4", "--limit", "7"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "7 generated, 0 resumed, 0 failed of 7 prompts" in out
    assert "limits a: calls 7, retries 0" in out and "limits local/f: calls 7" in out
    assert len(read_records(tmp_path / "ds")) == 7


def test_progress_shows_rate_eta_failures_and_tokens(tmp_path, capsys):
    fuse, _ = make_fuse()
    fuse.configure(min_candidates=3)
    fuse.teachers[0].lm.engine.fail = lambda r: r.inputs["prompt"] == "p1"
    synthesize(fuse, prompts(4), tmp_path, concurrency=2, max_attempts=1, export=False)
    bar = capsys.readouterr().err.replace("\r", "\n").splitlines()
    final = [line for line in bar if "4/4" in line][-1]
    assert "row/s" in final and "<00:00" in final  # rate and ETA
    assert "failed=1" in final and "tokens=" in final and "tokens=0" not in final


def test_no_progress_silences_the_export_progress_bars_too(tmp_path, capfd):
    """``progress=False`` (``synth --no-progress``) still printed the datasets library's "Saving the dataset"
    and "Creating parquet/json" bars from the export."""
    import datasets as hf_datasets

    fuse, _ = make_fuse()
    capfd.readouterr()
    synthesize(fuse, prompts(2), tmp_path, progress=False)
    err = capfd.readouterr().err
    assert "Saving the dataset" not in err and "Creating" not in err
    assert hf_datasets.is_progress_bar_enabled()  # restored for the rest of the process
