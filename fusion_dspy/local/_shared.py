"""One ``llama_cpp.Llama`` per model file per process, each with its own lock.

A GGUF model costs 0.2-1.8 GB of RAM and up to seconds to load, and llama.cpp reuses its KV cache for the longest
prompt prefix it has already seen, which makes repeated DSPy calls with the same system prompt 2-3x faster. Both
argue for one shared instance per model rather than one per ``dspy.LM`` copy, optimizer deep copy or thread.
``Llama`` objects are not thread-safe, so every use goes through the instance's lock.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["SharedLlama", "check_shared_settings", "get_shared_llama", "release_shared_llama", "require_llama_cpp"]

_logger = logging.getLogger(__name__)

_INSTALL_HINT = (
    "fusion_dspy.local needs llama-cpp-python. Install it with:\n"
    "    pip install 'fusion-dspy[local]'\n"
    "(llama-cpp-python is compiled from source: about 7 minutes on 2 cores, needs cmake and a C++ compiler)."
)


@dataclasses.dataclass
class SharedLlama:
    """A loaded model, the lock that serialises its use, and the settings it was loaded with."""

    path: Path
    llama: Any
    lock: threading.Lock
    settings: Mapping[str, Any]


_registry: dict[Path, SharedLlama] = {}
_slot_locks: dict[Path, threading.Lock] = {}
_registry_lock = threading.Lock()

#: llama-cpp-python silences llama.cpp (``verbose=False``) by swapping the process's stdout/stderr file
#: descriptors, which is not thread-safe: concurrent quiet calls on *different* models could leave them
#: pointing at /dev/null for the rest of the process. Every quiet load and call holds this lock.
QUIET_IO_LOCK = threading.Lock()


def require_llama_cpp() -> Any:
    """Import ``llama_cpp`` lazily, with an install hint instead of a bare ``ModuleNotFoundError``."""
    try:
        import llama_cpp
    except ImportError as exc:
        raise ImportError(_INSTALL_HINT) from exc
    return llama_cpp


def get_shared_llama(path: str | os.PathLike[str], **settings: Any) -> SharedLlama:
    """Return the process-wide instance for ``path``, loading it on first use.

    Args:
        path: GGUF file (already verified by the catalog).
        **settings: ``llama_cpp.Llama`` constructor arguments (``n_ctx``, ``n_threads``, ``chat_format``, ...).

    Raises:
        ValueError: The model is already loaded with different settings. Two instances of one model would
            double its memory, so this is refused; call :func:`release_shared_llama` first to reload it.
    """
    key = Path(path).resolve()
    with _registry_lock:
        shared = _registry.get(key)
        slot_lock = _slot_locks.setdefault(key, threading.Lock())
    if shared is None:
        # Load outside the registry lock, so loading one model does not block users of another.
        with slot_lock:
            shared = _registry.get(key)
            if shared is None:
                llama_cpp = require_llama_cpp()
                _logger.info("Loading %s with %s", key, settings)
                quiet = contextlib.nullcontext() if settings.get("verbose") else QUIET_IO_LOCK
                with quiet:  # loading also swaps stdout/stderr when not verbose (see QUIET_IO_LOCK)
                    llama = llama_cpp.Llama(model_path=str(key), **settings)
                shared = SharedLlama(path=key, llama=llama, lock=threading.Lock(), settings=dict(settings))
                with _registry_lock:
                    _registry[key] = shared
    check_shared_settings(key, settings)
    return shared


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


@atexit.register
def _close_all() -> None:
    # Free models while llama_cpp's module globals still exist; Llama.__del__ during interpreter teardown
    # otherwise prints "TypeError: 'NoneType' object is not callable".
    with _registry_lock:
        shared_models = list(_registry.values())
        _registry.clear()
    for shared in shared_models:
        with shared.lock:
            close = getattr(shared.llama, "close", None)
            if callable(close):
                close()


def release_shared_llama(path: str | os.PathLike[str]) -> bool:
    """Forget the shared instance for ``path``; returns whether one was registered.

    The next engine that needs the model loads it again (with its own settings). Engines that already hold the
    old instance keep using it, so its memory is freed only when they are garbage collected.
    """
    key = Path(path).resolve()
    with _registry_lock:
        return _registry.pop(key, None) is not None
