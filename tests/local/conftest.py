"""Fixtures for the local-model tests: offline environment, an isolated model cache, shared SmolLM2 LMs."""

from __future__ import annotations

import os

# Before dspy/litellm are imported anywhere: no cost-map or model-metadata fetches, no hub access.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from collections.abc import Iterator
from pathlib import Path

import pytest

SMOLLM2 = "smollm2-135m"


@pytest.fixture(scope="session", autouse=True)
def _isolated_model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Keep sidecars and assembled models out of the user's ~/.cache (SmolLM2 is used in place: no copy)."""
    path = tmp_path_factory.mktemp("models")
    previous = os.environ.get("FUSION_DSPY_MODEL_DIR")
    os.environ["FUSION_DSPY_MODEL_DIR"] = str(path)
    yield path
    if previous is None:
        os.environ.pop("FUSION_DSPY_MODEL_DIR", None)
    else:
        os.environ["FUSION_DSPY_MODEL_DIR"] = previous


@pytest.fixture(scope="session")
def runtime() -> object:
    return pytest.importorskip("xllamacpp", reason="xllamacpp is not installed (pip install 'fusion-dspy[local]')")


@pytest.fixture(scope="session")
def smollm2_path(runtime: object) -> Path:
    from fusion_dspy.local import catalog

    if not catalog.is_installed(SMOLLM2):
        pytest.skip(f"{SMOLLM2} is not installed ({catalog.get_spec(SMOLLM2).install_command})")
    return catalog.resolve_model_path(SMOLLM2)


@pytest.fixture(scope="session")
def smollm2(smollm2_path: Path) -> object:
    """SmolLM2 with grammar-constrained decoding (the default), DSPy cache off."""
    from fusion_dspy import local

    return local.lm(SMOLLM2, n_threads=1, cache=False, max_tokens=128)


@pytest.fixture(scope="session")
def smollm2_free(smollm2_path: Path) -> object:
    """SmolLM2 without a grammar (shares the loaded model with ``smollm2``)."""
    from fusion_dspy import local

    return local.lm(SMOLLM2, n_threads=1, grammar="off", cache=False, max_tokens=64)
