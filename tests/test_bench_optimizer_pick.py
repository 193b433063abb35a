"""benchmarks/optimizer_pick.py: the held-out check of the optimizer's pick, with and without a fusor."""

from __future__ import annotations

from pathlib import Path

import dspy

from fusion_dspy.testing import FakeEngine
from tests.helpers import load_script

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "optimizer_pick.py"
SYSTEMS = ["A", "B", "C"]


def _examples(count: int = 16) -> list[dspy.Example]:
    rows = []
    for i in range(count):
        target = f"Der Hund {i} schläft im Garten."
        outputs = {"A": target, "B": f"Der Hund {i} schläft.", "C": f"Eine Katze {i} läuft im Haus."}
        rows.append(dspy.Example(source=f"The dog {i} sleeps in the garden.", source_language="English",
                                 target_language="German", target=target, system_outputs=outputs)
                    .with_inputs("source", "source_language", "target_language"))
    return rows


def test_with_a_fusor_the_space_fuses_and_guards_and_the_pick_keeps_its_floor():
    bench = load_script(BENCH, "optimizer_pick")
    # A fusor that writes a poor translation: fused configurations lose, guarded ones fall back to the selection.
    engine = FakeEngine(responder=lambda request: {"translation": "Etwas ganz anderes.", "comparison": "x"},
                        name="optimizer-pick-fusor")  # its own entries in DSPy's memory cache
    lines: list[str] = []
    examples = _examples()
    # cache=True as local.lm has it: a trial that differs only in the guard re-sends the same fusor request.
    result = bench.run(examples, systems=SYSTEMS, fusor=engine.lm(cache=True), splits=1, trials=14,
                       emit=lines.append)
    params = [t.params for t in result["studies"][0].trials]
    assert any(p.get("self.mode") == "fuse" for p in params)  # fusion is in the space ...
    assert any("self.guard" in p for p in params)  # ... and so is the guard
    # The named pools keep the fusor's work small: with 3 systems, N=2 or 3 of "all" are the only fused sets.
    assert 0 < engine.calls <= 2 * len(examples)
    bank = result["banks"][0]
    # Every fusor reply the study paid for is in its bank (the held-out scoring calls the fusor outside it).
    assert 0 < bank.fusor_stored == bank.fusor_size <= engine.calls
    row = result["rows"][0]
    assert row["val_chosen"] >= row["val_single"] - 1e-9  # never below the best system alone on its valset
    assert row["single"] == "A"
    assert len(result["pooled"]["chosen"]) == len(result["pooled"]["single"]) == 8  # the held-out half, paired
    assert len(lines) == 3 and lines[2].startswith("| 0 | ")


def test_without_a_fusor_no_lm_is_called_and_the_space_only_selects():
    bench = load_script(BENCH, "optimizer_pick")
    result = bench.run(_examples(), systems=SYSTEMS, splits=2, trials=8, emit=lambda line: None)
    for study in result["studies"]:
        assert {t.params.get("self.mode", "select") for t in study.trials} == {"select"}
    assert [row["split"] for row in result["rows"]] == [0, 1]
    assert all(row["val_chosen"] >= row["val_single"] - 1e-9 for row in result["rows"])


def test_a_stored_study_resumes_instead_of_starting_again(tmp_path):
    bench = load_script(BENCH, "optimizer_pick")
    first = bench.run(_examples(), systems=SYSTEMS, splits=1, trials=6, storage_dir=str(tmp_path),
                      emit=lambda line: None)
    assert (tmp_path / "split-0.jsonl").is_file()
    again = bench.run(_examples(), systems=SYSTEMS, splits=1, trials=6, storage_dir=str(tmp_path),
                      emit=lambda line: None)
    assert len(again["studies"][0].trials) == len(first["studies"][0].trials)  # the budget was spent already
    assert again["rows"] == first["rows"]


def test_the_splits_share_one_bank_so_no_fusor_prompt_is_paid_for_twice(tmp_path):
    bench = load_script(BENCH, "optimizer_pick")
    prompts: list[str] = []

    def fusor(request):
        prompts.append(request.system + request.user)
        return {"translation": "Etwas ganz anderes.", "comparison": "x"}

    engine = FakeEngine(responder=fusor, name="optimizer-pick-shared-bank")
    lm = engine.lm(cache=False)  # no DSPy cache: every repeat below would be a paid call
    examples = _examples(12)
    bench.run(examples, systems=SYSTEMS, fusor=lm, splits=3, trials=10, storage_dir=str(tmp_path),
              emit=lambda line: None)
    # Three splits of the same 12 segments, each scoring its valset and its held-out half: one paid call a prompt.
    assert prompts and len(prompts) == len(set(prompts))
    assert (tmp_path / "banks" / "splits" / "draws.jsonl").is_file()
    assert [(tmp_path / "banks" / f"optimizer-pick-{k}" / "evals.jsonl").is_file() for k in range(3)] == [True] * 3
    paid = engine.calls
    bench.run(examples, systems=SYSTEMS, fusor=lm, splits=3, trials=10, storage_dir=str(tmp_path),
              emit=lambda line: None)
    assert engine.calls == paid  # the resumed run, held-out scoring included, calls the fusor for nothing
