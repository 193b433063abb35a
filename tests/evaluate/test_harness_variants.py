"""Harness(guard=True, strategies=...): the selection guard and extra fusor strategies as harness methods."""

from __future__ import annotations

import collections
import json

import dspy
import pytest

from fusion_dspy import Fuse
from fusion_dspy import Teacher
from fusion_dspy.evaluate import Harness
from fusion_dspy.evaluate import example_id
from fusion_dspy.guard import GUARD_RULE
from fusion_dspy.selectors import MajorityVote
from fusion_dspy.testing import FakeEngine

# One teacher, three samples per question (request seed = sample). The paper-prompt fusor writes a
# wrong "7" on q0 (the guard should replace it by the majority "4"), the right "6" on q1 (kept), and
# fails on q2 (the Fuse falls back to select: nothing fused, so the guard passes it through).
ANSWERS = {"q0": ["4", "5", "4"], "q1": ["6", "6", "2"], "q2": ["9", "9", "8"]}
GOLD = {"q0": "4", "q1": "6", "q2": "9"}
PAPER = {"q0": "7", "q1": "6"}


def strategy_of(request) -> str:
    """Which fusor strategy rendered this request (from the candidates input)."""
    shown = request.inputs.get("candidates", "")
    if shown.startswith("Tally of the final answers"):
        return "vote"
    if shown.startswith("Agreement with the other candidates"):
        return "edit"
    return "paper"


def engines(delay: float = 0.0):
    teacher = FakeEngine(name="t", delay=delay,
                         responder=lambda r: {"answer": ANSWERS[r.inputs["question"]][r.sample("t")]})

    def fuse_answer(request):
        question, strategy = request.inputs["question"], strategy_of(request)
        if strategy == "paper":
            return {"comparison": "c", "answer": PAPER[question]}
        answers = ANSWERS[question]
        return {"comparison": "c", "answer": max(set(answers), key=answers.count)}  # vote and edit: the majority

    fusor = FakeEngine(name="f", delay=delay, responder=fuse_answer,
                       fail=lambda r: r.inputs["question"] == "q2" and strategy_of(r) == "paper")
    return teacher, fusor


def metric(example, prediction, trace=None):
    return float(str(prediction.answer) == example.answer)


def examples():
    return [dspy.Example(question=q, answer=a).with_inputs("question") for q, a in GOLD.items()]


def make(out_dir, *, guard=False, strategies=(), concurrency=1, delay=0.0, ns=(1, 2, 3), fuse_guard=None):
    teacher, fusor = engines(delay)
    fuse = Fuse("question -> answer", 3, teachers=[Teacher(teacher.lm(), name="t", samples=3, temperature=0.8)],
                fusor=fusor.lm(), max_threads=1, guard=fuse_guard)
    harness = Harness(fuse=fuse, metric=metric, examples=examples(), ns=list(ns), selectors=[MajorityVote(), "mbr"],
                      out_dir=out_dir, progress=False, plots=False, resamples=100, guard=guard,
                      strategies=strategies, concurrency=concurrency)
    return harness, teacher, fusor


def journal_results(out_dir):
    lines = (out_dir / "results.jsonl").read_text().splitlines()
    return [json.loads(line)["result"] for line in lines if '"kind": "result"' in line]


def by_key(results):
    return {(r["example"], r["method"], r["n"]): r for r in results}


def comparable(results):
    """Everything but the measured latencies, per (example, method, n)."""
    return {key: {k: v for k, v in r.items() if k != "time_s"} for key, r in by_key(results).items()}


def test_guard_replaces_a_worse_fused_answer_and_keeps_a_good_one(tmp_path):
    harness, teacher, fusor = make(tmp_path, guard=True)
    report = harness.run()
    eid = {q: example_id(e) for q, e in zip(GOLD, examples(), strict=True)}
    results = by_key(journal_results(tmp_path))
    # q0: the lone wrong "7" loses to the majority "4"; q1: the fused "6" ties the majority and stays.
    replaced, kept = results[(eid["q0"], "fusion+guard", 3)], results[(eid["q1"], "fusion+guard", 3)]
    assert (replaced["path"], replaced["output"], replaced["score"]) == ("select", {"answer": "4"}, 1.0)
    assert (kept["path"], kept["output"], kept["score"]) == ("fuse", {"answer": "6"}, 1.0)
    fused = {q: results[(eid[q], "fusion", 3)] for q in GOLD}
    assert replaced["attribution"] is None and kept["attribution"] == fused["q1"]["attribution"] is not None
    # q2: the fusor failed, the Fuse selected: nothing fused to guard, the result passes through as it is
    # (no selector run, so not even its time is added). So does every N=1 result (one candidate, path single).
    assert fused["q2"]["path"] == "select" and fused["q2"]["error"] is not None
    for key in [(eid["q2"], 3)] + [(eid[q], 1) for q in GOLD]:
        assert results[(key[0], "fusion+guard", key[1])] == {**results[(key[0], "fusion", key[1])],
                                                            "method": "fusion+guard", "guard_rule": GUARD_RULE}
    # Tokens are the fusion's (majority makes no LM call); time adds the selector's on top.
    for q in GOLD:
        guarded = results[(eid[q], "fusion+guard", 3)]
        assert guarded["usage"] == fused[q]["usage"] and guarded["time_s"] >= fused[q]["time_s"]
    summary = report.get("fusion+guard", 3)
    assert summary.paths == {"select": 2, "fuse": 1} and summary.mean == 1.0
    assert report.get("fusion", 3).mean == pytest.approx(2 / 3)
    # Every N is guarded: at N=2 both fused answers tie or beat the 2 candidates; at N=1 nothing is fused.
    assert report.get("fusion+guard", 2).paths == {"fuse": 2, "select": 1}
    assert report.get("fusion+guard", 1).paths == report.get("fusion", 1).paths == {"single": 3}
    # No LM call for the guard: one draw of 3 per question, one fusor call per question at N=2 and N=3.
    assert (teacher.calls, fusor.calls) == (9, 6)
    markdown = report.to_markdown()
    assert ("`fusion+guard` N=3: kept the fused answer on 1 of 2 examples (50%), else `bon-majority`'s pick; "
            "1 more had no fused answer to guard.") in markdown
    assert "`fusion+guard` N=2: kept the fused answer on 2 of 2 examples (100%)" in markdown
    assert "`fusion+guard` N=1: no fused answer to guard (3 examples passed through)." in markdown
    # q2's fusor fault is in the table's notes, for the fusion and for its guarded row (the same answer).
    fault = fused["q2"]["error"]
    assert report.get("fusion", 3).faults == report.get("fusion+guard", 3).faults == {fault: 1}
    for method in ("fusion", "fusion+guard"):
        assert (f"`{method}` N=3: 1 of 3 examples recorded a fault (1 x {fault}); their rows score what the "
                "method returned instead.") in markdown
    assert (tmp_path / "report.md").read_text() == markdown


@pytest.mark.parametrize("fuse_guard, q0", [(None, ("fuse", "7")), (False, ("fuse", "7")), (True, ("guarded", "4"))])
def test_fusion_is_plain_unless_the_fuse_forces_the_guard(tmp_path, fuse_guard, q0):
    """The auto guard (on for the Fuse's mbr) is off in the harness: `fusion+guard` is its measurement."""
    harness, _, _ = make(tmp_path, ns=(3,), fuse_guard=fuse_guard)
    harness.run()
    fused = by_key(journal_results(tmp_path))[(example_id(examples()[0]), "fusion", 3)]
    assert (fused["path"], fused["output"]["answer"]) == q0
    assert harness.fuse.settings.guard is fuse_guard  # the Fuse itself is never reconfigured


def test_markdown_without_guard_methods_is_unchanged(tmp_path):
    report = make(tmp_path, strategies=["vote"])[0].run()
    assert report.guard_summary() == ""
    notes_end = "`copied` is the share of the fused text copied from the candidates (difflib).\n"
    # After the notes, only the faults (q2's fusor fails in this setup): no guard line.
    assert report.to_markdown().endswith(notes_end + "\n" + report.fault_summary() + "\n")
    assert "guard" not in report.fault_summary() and report.fault_summary().count("recorded a fault") == 2


def test_each_strategy_calls_the_fusor_once_per_example_on_the_same_candidates(tmp_path):
    harness, teacher, fusor = make(tmp_path, guard=True, strategies=["vote", "edit", "paper", "vote"])
    fuse = harness.fuse
    instructions, prompt = fuse.fusor.signature.instructions, fuse.prompt
    report = harness.run()
    calls = collections.Counter((r.inputs["question"], strategy_of(r)) for r in fusor.requests)
    # paper is the Fuse's own strategy (`fusion`, at N=2 and 3); vote and edit run once, at the largest N.
    assert calls == {(q, s): 2 if s == "paper" else 1 for q in GOLD for s in ("paper", "vote", "edit")}
    assert teacher.calls == 9  # the strategies fuse the stored candidates: no new draw
    methods = {(m.method, m.n) for m in report.methods}
    assert {("fusion:vote", 3), ("fusion:edit", 3), ("fusion:vote+guard", 3), ("fusion:edit+guard", 3)} <= methods
    assert not any(m.startswith("fusion:") and n != 3 for m, n in methods) and ("fusion:paper", 3) not in methods
    # Fusing over the same stored candidates the others saw: both strategies find the majority.
    assert report.get("fusion:vote", 3).mean == report.get("fusion:edit", 3).mean == 1.0
    assert report.get("fusion:vote+guard", 3).paths == {"fuse": 3}
    # The Fuse under test was never reconfigured.
    assert fuse.prompt == prompt and fuse.prompt.strategy == "paper"
    assert fuse.fusor.signature.instructions == instructions
    assert report.config["strategies"] == ["vote", "edit"] and report.config["guard"] is True


def test_adding_guard_and_a_strategy_to_a_finished_run_only_computes_the_new_methods(tmp_path):
    make(tmp_path / "run")[0].run()
    before = by_key(journal_results(tmp_path / "run"))
    harness, teacher, fusor = make(tmp_path / "run", guard=True, strategies=["vote"])
    report = harness.run()
    # No new draw, no repeated fusion: only the vote fusion, once per example.
    assert teacher.calls == 0 and [strategy_of(r) for r in fusor.requests] == ["vote"] * 3
    after = journal_results(tmp_path / "run")
    keys = collections.Counter((r["example"], r["method"], r["n"]) for r in after)
    assert set(keys.values()) == {1}  # one result per example, method and N
    added = {method for _, method, _ in set(keys) - set(before)}
    assert added == {"fusion+guard", "fusion:vote", "fusion:vote+guard"}
    # Guarding journaled fusions decides as guarding fresh ones does.
    fresh = make(tmp_path / "fresh", guard=True, strategies=["vote"])[0].run()
    assert comparable(after) == comparable(journal_results(tmp_path / "fresh"))
    assert [(m.method, m.n, m.mean, m.paths) for m in report.methods] == [
        (m.method, m.n, m.mean, m.paths) for m in fresh.methods]
    # And a third run has nothing left to do.
    _, teacher, fusor = again = make(tmp_path / "run", guard=True, strategies=["vote"])
    again[0].run()
    assert teacher.calls == fusor.calls == 0 and len(journal_results(tmp_path / "run")) == len(after)


def test_guard_results_of_an_older_rule_are_not_reported_and_are_redone_without_a_fusor_call(tmp_path):
    make(tmp_path, guard=True)[0].run()
    path = tmp_path / "results.jsonl"
    lines = path.read_text().splitlines()
    entries = [json.loads(line) for line in lines]
    current = {(e["result"]["example"], e["result"]["n"]): dict(e["result"]) for e in entries
               if e.get("kind") == "result" and e["result"]["method"] == "fusion+guard"}
    # Rewrite the journal as an older version left it: its guard results have no rule and a made-up score.
    old = []
    for entry in entries:
        if entry.get("kind") == "result" and entry["result"]["method"] == "fusion+guard":
            entry["result"].pop("guard_rule")
            entry["result"]["score"] = -5.0
        old.append(json.dumps(entry))
    path.write_text("\n".join(old) + "\n")
    harness, teacher, fusor = make(tmp_path, guard=True)
    assert all(m.method != "fusion+guard" for m in harness.report().methods)  # stale: not reported
    report = harness.run()
    assert teacher.calls == fusor.calls == 0  # redone from the journaled fused answers and candidates
    assert report.get("fusion+guard", 3).mean == 1.0
    redone = {(r["example"], r["n"]): r for r in journal_results(tmp_path)
              if r["method"] == "fusion+guard" and r.get("guard_rule") == GUARD_RULE}
    assert {k: {f: v for f, v in r.items() if f != "time_s"} for k, r in redone.items()} == {
        k: {f: v for f, v in r.items() if f != "time_s"} for k, r in current.items()}


def test_a_journal_written_without_guard_opens_with_guard_and_strategies(tmp_path):
    plain = make(tmp_path)[0]
    plain.run()
    guarded = make(tmp_path, guard=True, strategies=["edit", "vote"])[0]  # no "another configuration" error
    assert guarded.fingerprint == plain.fingerprint
    header = json.loads((tmp_path / "results.jsonl").read_text().splitlines()[0])
    assert header["kind"] == "header" and header["fingerprint"] == guarded.fingerprint


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"strategies": ["vote", "fancy"]}, r"strategies: unknown \['fancy'\]; use names from \['paper', 'analyse'"),
        ({"strategies": "vote"}, "strategies must be a list of strategy names"),
        ({"guard": "yes"}, "guard must be True or False"),
        ({"guard": True, "include_fusion": False}, "guard=True needs the fusion method, but include_fusion=False"),
        ({"strategies": ["edit"], "include_fusion": False}, r"strategies=\['edit'\] needs the fusion method"),
    ],
)
def test_bad_guard_or_strategies_are_refused_naming_the_argument(tmp_path, kwargs, match):
    teacher, fusor = engines()
    fuse = Fuse("question -> answer", 3, teachers=[Teacher(teacher.lm(), name="t", samples=3)], fusor=fusor.lm())
    with pytest.raises(ValueError, match=match):
        Harness(fuse=fuse, metric=metric, examples=examples(), ns=[3], out_dir=tmp_path, progress=False, **kwargs)
    assert not (tmp_path / "results.jsonl").exists()  # refused before any journal is written


def test_concurrency_two_gives_the_results_of_concurrency_one_with_one_variant_per_strategy(tmp_path, monkeypatch):
    import fusion_dspy.evaluate.harness as harness_module

    made = []
    real = harness_module.fuse_variant

    def counting(fuse, **changes):
        made.append(changes.get("prompt") and changes["prompt"].strategy)
        return real(fuse, **changes)

    monkeypatch.setattr(harness_module, "fuse_variant", counting)
    serial = make(tmp_path / "serial", guard=True, strategies=["vote", "edit"])[0].run()
    assert sorted(filter(None, made)) == ["edit", "vote"]
    made.clear()
    harness, teacher, fusor = make(tmp_path / "threads", guard=True, strategies=["vote", "edit"], concurrency=2,
                                   delay=0.02)
    threaded = harness.run()
    assert sorted(filter(None, made)) == ["edit", "vote"]  # shared by the examples running at once
    assert comparable(journal_results(tmp_path / "threads")) == comparable(journal_results(tmp_path / "serial"))
    assert [(m.method, m.n, m.mean, m.paths) for m in threaded.methods] == [
        (m.method, m.n, m.mean, m.paths) for m in serial.methods]
    assert (teacher.calls, fusor.calls) == (9, 12)


def build_guarded(out_dir, guard=True):
    """A picklable harness builder for the Ray path (each actor builds its own)."""
    return make(out_dir, guard=guard, strategies=["vote"] if guard else ())[0]


def test_ray_runs_guard_and_strategies_and_resumes_a_local_run_without_them(tmp_path, runtime):
    pytest.importorskip("ray")
    import functools

    from fusion_dspy.evaluate.ray import RayOptions
    from fusion_dspy.evaluate.ray import run_harness_ray

    local = build_guarded(tmp_path / "local").run()
    stats = [(m.method, m.n, m.count, m.mean, m.paths, m.input_tokens) for m in local.methods]
    on_ray = run_harness_ray(build_guarded, tmp_path / "ray", ray=RayOptions(actors=1, concurrency=2))
    assert [(m.method, m.n, m.count, m.mean, m.paths, m.input_tokens) for m in on_ray.methods] == stats
    # A local run without guard, then guard and strategies added on Ray: the actors guard journaled fusions.
    build_guarded(tmp_path / "mixed", guard=False).run()
    resumed = run_harness_ray(functools.partial(build_guarded, guard=True), tmp_path / "mixed",
                              ray=RayOptions(actors=1, concurrency=2))
    assert [(m.method, m.n, m.count, m.mean, m.paths, m.input_tokens) for m in resumed.methods] == stats
    assert comparable(journal_results(tmp_path / "mixed")) == comparable(journal_results(tmp_path / "local"))
