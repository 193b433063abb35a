"""The harness end to end on a real (tiny) local model: recorded WMT-style candidates, SmolLM2 fusing."""

from __future__ import annotations

import dspy
import pytest
from fusion_dspy.programs.recorded import recorded_teachers
from fusion_dspy.programs.translate import Translate
from fusion_dspy.programs.translate import chrf

from fusion_dspy import Fuse
from fusion_dspy.evaluate import Harness

pytestmark = pytest.mark.local_model


@pytest.fixture(scope="module")
def smollm2():
    pytest.importorskip("xllamacpp", reason="xllamacpp is not installed (pip install 'fusion-dspy[local]')")
    from fusion_dspy import local

    if not local.is_installed("smollm2-135m"):
        pytest.skip("smollm2-135m is not installed")
    return local.lm("smollm2-135m", n_threads=1, cache=False, max_tokens=96)


def test_harness_with_a_local_fusor(tmp_path, smollm2):
    row = dspy.Example(source="Good morning.", source_language="English", target_language="German",
                       target="Guten Morgen.", system_outputs={"A": "Guten Morgen.", "B": "Schönen Morgen."})
    rows = [row.with_inputs("source", "source_language", "target_language")]
    fuse = Fuse(Translate, 2, teachers=recorded_teachers(rows, ["A", "B"]), fusor=smollm2)
    report = Harness(fuse=fuse, metric=chrf, examples=rows, ns=[2], out_dir=tmp_path, progress=False,
                     resamples=100, plots=False).run()
    fusion = report.get("fusion", 2)
    # SmolLM2's answer quality is not the point; the real engine must go through every step.
    assert fusion.count == 1 and sum(fusion.paths.values()) == 1 and fusion.input_tokens > 0 and fusion.time_s > 0
    assert report.get("oracle", 2).mean == pytest.approx(100.0)
