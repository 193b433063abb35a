"""Shared test setup: fully offline, no disk cache, fresh DSPy settings per test."""

from __future__ import annotations

import os

# Before dspy/litellm/datasets are imported anywhere: never reach for the network.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import copy  # noqa: E402

import dspy  # noqa: E402
import pytest  # noqa: E402

dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)

import importlib  # noqa: E402

_settings_module = importlib.import_module("dspy.dsp.utils.settings")

_DEFAULTS = copy.deepcopy(_settings_module.main_thread_config)


@pytest.fixture(autouse=True)
def clear_dspy_settings():
    """Tests must not leak ``dspy.configure`` state into each other (pattern from DSPy's own suite)."""
    yield
    _settings_module.main_thread_config.clear()
    _settings_module.main_thread_config.update(copy.deepcopy(_DEFAULTS))


@pytest.fixture(scope="module")
def runtime():
    """A local Ray runtime for one test module, shut down after it (idle Ray workers would keep
    taking CPU from the rest of the suite, which has timing-sensitive concurrency tests)."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    if started:
        ray.shutdown()


@pytest.fixture(params=["forward", "aforward"])
def call(request):
    """Calls a Fuse through the sync or the async driver (every behaviour must hold in both)."""
    import asyncio

    if request.param == "forward":
        return lambda fuse, **inputs: fuse(**inputs)
    return lambda fuse, **inputs: asyncio.run(fuse.acall(**inputs))
