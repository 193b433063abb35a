"""Fused synthetic data (the paper's setting ii): sample a teacher pool per prompt, fuse, keep provenance.

Runs are sharded, checkpointed per prompt and resumable after ``kill -9`` (nothing lost, nothing
duplicated); see :mod:`fusion_dspy.synth.pipeline` for the on-disk layout. ``concurrency=K`` keeps K
prompts in flight (threads); :mod:`fusion_dspy.synth.ray` runs the same work on a Ray cluster.

Example:
    >>> from fusion_dspy.synth import load_prompts, synthesize
    >>> prompts = load_prompts("prompts.jsonl", fuse.signature.input_fields)
    >>> result = synthesize(fuse, prompts, "ds/", also_select="mbr", output_format="chat")
    >>> datasets.load_from_disk("ds/dataset")
"""

from __future__ import annotations

from fusion_dspy.synth.export import export_dataset
from fusion_dspy.synth.export import read_records
from fusion_dspy.synth.pipeline import SynthResult
from fusion_dspy.synth.pipeline import config_hash
from fusion_dspy.synth.pipeline import synthesize
from fusion_dspy.synth.prompts import Prompt
from fusion_dspy.synth.prompts import iter_prompts
from fusion_dspy.synth.prompts import load_prompts
from fusion_dspy.synth.prompts import make_prompts
from fusion_dspy.synth.record import build_record
from fusion_dspy.synth.record import render_prompt
from fusion_dspy.synth.record import to_chat

__all__ = [
    "Prompt",
    "SynthResult",
    "build_record",
    "config_hash",
    "export_dataset",
    "iter_prompts",
    "load_prompts",
    "make_prompts",
    "read_records",
    "render_prompt",
    "synthesize",
    "to_chat",
]
