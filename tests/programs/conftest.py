"""Fixtures for the program tests: a Fuse over fake teachers, and the real data directory if present."""

from __future__ import annotations

from pathlib import Path

import pytest
from fusion_dspy.programs.data import data_dir


@pytest.fixture
def real_data() -> Path:
    """The benchmark data directory; tests using it are skipped where it does not exist."""
    root = data_dir()
    if root is None:
        pytest.skip("no benchmark data directory (set FUSION_DSPY_DATA_DIR)")
    return root


@pytest.fixture(autouse=True)
def datasets_cache(tmp_path, monkeypatch):
    """Keep datasets' Arrow cache inside the test's temporary directory."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
