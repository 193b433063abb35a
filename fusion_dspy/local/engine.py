"""DSPy 3.4 custom engines that run GGUF models in-process with llama-cpp-python.

DSPy owns caching, retries, ``n`` fan-out, history and callbacks; an engine turns one canonical
``dspy.lm15.Request`` into one ``dspy.lm15.Response``. This module adds what a local model needs on top: a shared
``Llama`` per model file (memory, and llama.cpp's prompt-prefix cache), a lock per instance (``Llama`` is not
thread-safe, and DSPy fans out over threads), grammar-constrained decoding so small models emit parseable replies,
and chat-template quirks.

Examples:
    >>> import dspy
    >>> from fusion_dspy.local.engine import AsyncLlamaCppEngine, LlamaCppEngine
    >>> engine = LlamaCppEngine(model="smollm2-135m")  # doctest: +SKIP
    >>> lm = dspy.LM("local/smollm2-135m", engine=engine, async_engine=AsyncLlamaCppEngine(engine))  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import re
import threading
from collections.abc import AsyncIterator
from collections.abc import Iterator
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dspy.lm15 import ContextLengthError
from dspy.lm15 import InvalidRequestError
from dspy.lm15 import Message
from dspy.lm15 import Request
from dspy.lm15 import Response
from dspy.lm15 import ServerError
from dspy.lm15 import TextPart
from dspy.lm15 import UnsupportedFeatureError
from dspy.lm15 import Usage
from dspy.lm15 import response_to_events

from fusion_dspy.local import catalog
from fusion_dspy.local._shared import QUIET_IO_LOCK
from fusion_dspy.local._shared import SharedLlama
from fusion_dspy.local._shared import check_shared_settings
from fusion_dspy.local._shared import get_shared_llama
from fusion_dspy.local._shared import require_llama_cpp
from fusion_dspy.local.grammar import GrammarMode
from fusion_dspy.local.grammar import derive_gbnf

__all__ = ["AsyncLlamaCppEngine", "LlamaCppEngine"]

_logger = logging.getLogger(__name__)

_CONTEXT_OVERFLOW = re.compile(r"exceed context window|context window|n_ctx", re.IGNORECASE)


class LlamaCppEngine:
    """Synchronous DSPy engine backed by a shared ``llama_cpp.Llama``.

    The model is resolved (and for catalog models, sha256-verified) at construction, so a missing package fails
    where the LM is built; it is loaded on the first call and shared by every engine on the same file.

    Args:
        model: Catalog name (``"smollm2-135m"``, ``"qwen2.5-0.5b"``, ...) or path of a ``.gguf`` file.
        n_ctx: Context window in tokens. DSPy prompts with demos grow quickly; 4096 fits the bundled models.
        n_threads: CPU threads for generation; defaults to ``os.cpu_count()``. On a machine whose cores are busy
            with other work, ``1`` can be several times faster: ggml's worker threads spin-wait on each other
            (SmolLM2 on 2 busy cores: 36-40 tok/s with 1 thread, 4-9 tok/s with 2).
        n_batch: Prompt-processing batch size.
        grammar: ``"auto"`` constrains decoding to the adapter's reply format (ChatAdapter field markers, or the
            JSON schema in ``response_format``) whenever one can be derived; ``"off"`` samples freely.
        default_max_tokens: Used when the request sets no ``max_tokens`` (llama.cpp would otherwise run to
            ``n_ctx``).
        chat_format: llama-cpp-python chat format to force; defaults to the catalog entry's, else the GGUF's
            template.
        merge_system_into_user: Prepend the system prompt to the first user message (for templates that drop
            system messages); defaults to the catalog entry's setting.
        cache_dir: Where chunked catalog models are assembled (see ``catalog.default_cache_dir``).
        verbose: Let llama.cpp log to stderr.
        llama_kwargs: Further ``llama_cpp.Llama`` constructor arguments (e.g. ``{"flash_attn": True}``).

    Attributes:
        supports_response_schema: DSPy reads this to let ``JSONAdapter`` send a JSON schema, which the engine
            enforces with a grammar.
        supported_params: The ``Config`` fields the engine honours.
    """

    supports_function_calling = False
    supports_reasoning = False
    supports_response_schema = True
    supported_params = frozenset(
        {
            "temperature",
            "max_tokens",
            "top_p",
            "top_k",
            "stop",
            "seed",
            "response_format",
            "frequency_penalty",
            "presence_penalty",
        }
    )

    def __init__(
        self,
        *,
        model: str | os.PathLike[str],
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_batch: int = 512,
        grammar: GrammarMode = "auto",
        default_max_tokens: int = 256,
        chat_format: str | None = None,
        merge_system_into_user: bool | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        verbose: bool = False,
        llama_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        if grammar not in ("auto", "off"):
            raise ValueError(f"grammar must be 'auto' or 'off', not {grammar!r}.")
        spec = catalog.MODELS.get(os.fspath(model)) if isinstance(model, str) else None
        self.model = os.fspath(model)
        self.spec = spec
        self.path: Path = catalog.resolve_model_path(model, cache_dir=cache_dir)
        self.grammar: GrammarMode = grammar
        self.default_max_tokens = default_max_tokens
        self.merge_system_into_user = (
            merge_system_into_user if merge_system_into_user is not None else bool(spec and spec.merge_system_into_user)
        )
        self._options: dict[str, Any] = {
            "n_ctx": n_ctx,
            "n_threads": n_threads,
            "n_batch": n_batch,
            "chat_format": chat_format,
            "cache_dir": None if cache_dir is None else os.fspath(cache_dir),
            "verbose": verbose,
            "llama_kwargs": dict(llama_kwargs or {}),
        }
        self._settings: dict[str, Any] = {
            "n_ctx": n_ctx,
            "n_threads": n_threads or os.cpu_count() or 1,
            "n_batch": n_batch,
            "verbose": verbose,
            **dict(llama_kwargs or {}),
        }
        forced_format = chat_format or (spec.chat_format if spec else None)
        if forced_format is not None:
            self._settings["chat_format"] = forced_format
        self._shared: SharedLlama | None = None
        require_llama_cpp()  # fail where the LM is built, not on its first call
        check_shared_settings(self.path, self._settings)

    # -- DSPy engine contract -------------------------------------------------------------------------------

    def complete(self, request: Request) -> Response:
        """Run one chat completion for a canonical DSPy request."""
        kwargs, gbnf = self._completion_kwargs(request)
        shared = self.shared_llama()
        # Quiet calls share one process-wide lock (see _shared.QUIET_IO_LOCK); on a few CPU cores parallel
        # decoding of different models gains nothing anyway. Verbose engines need only their model's lock.
        io_lock = contextlib.nullcontext() if self._settings["verbose"] else QUIET_IO_LOCK
        with io_lock, shared.lock:
            if gbnf is not None:
                grammar = _compile_grammar(gbnf, shared.llama)
                if grammar is not None:
                    kwargs["grammar"] = grammar
            try:
                out = shared.llama.create_chat_completion(**kwargs)
            except ValueError as exc:
                if _CONTEXT_OVERFLOW.search(str(exc)):
                    raise ContextLengthError(
                        f"{self.path.name}: {exc}. Raise n_ctx (now {self._settings['n_ctx']}) in "
                        "fusion_dspy.local.lm(..., n_ctx=...) or shorten the prompt."
                    ) from exc
                raise InvalidRequestError(f"{self.path.name}: {exc}") from exc
            except RuntimeError as exc:  # llama_decode failures, out of memory
                raise ServerError(f"{self.path.name}: llama.cpp failed: {exc}") from exc
            usage = out.get("usage") or {}
            _trim_prefix_cache(shared.llama, usage.get("prompt_tokens") or 0)
        choice = out["choices"][0]
        text = choice["message"].get("content") or ""
        return Response(
            id=out.get("id"),
            model=request.model,
            message=Message.assistant([TextPart(text)]),
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
            usage=Usage(
                input_tokens=usage.get("prompt_tokens"),
                output_tokens=usage.get("completion_tokens"),
                total_tokens=usage.get("total_tokens"),
            ),
        )

    def stream(self, request: Request) -> Iterator[Any]:
        """Stream events for one request (the completion is produced whole, then replayed as events)."""
        return iter(response_to_events(self.complete(request)))

    def close(self) -> None:
        """No-op: the model is shared process-wide (see ``release_shared_llama``)."""

    def __deepcopy__(self, memo: dict[int, Any]) -> LlamaCppEngine:
        # Optimizers deep-copy programs; a copy must share the loaded model, not load another.
        return self

    def dump_state(self) -> dict[str, Any]:
        """Constructor arguments, so a program saved with this LM can rebuild it (DSPy's engine saving)."""
        return {
            "model": self.model,
            "grammar": self.grammar,
            "default_max_tokens": self.default_max_tokens,
            "merge_system_into_user": self.merge_system_into_user,
            **self._options,
        }

    @classmethod
    def load_state(cls, state: Mapping[str, Any]) -> LlamaCppEngine:
        """Rebuild an engine from :meth:`dump_state` output."""
        return cls(**dict(state))

    # -- helpers --------------------------------------------------------------------------------------------

    def shared_llama(self) -> SharedLlama:
        """The shared ``Llama`` for this model, loaded on first use."""
        if self._shared is None:
            self._shared = get_shared_llama(self.path, **self._settings)
        return self._shared

    def _completion_kwargs(self, request: Request) -> tuple[dict[str, Any], str | None]:
        """``create_chat_completion`` arguments and the GBNF grammar (if any) for a request."""
        config = request.config
        if request.tools:
            raise UnsupportedFeatureError(
                "The llama.cpp engine does not support tools; use ChatAdapter or JSONAdapter."
            )
        for name in ("reasoning", "logprobs", "probabilities", "tool_choice"):
            if getattr(config, name, None) is not None:
                raise UnsupportedFeatureError(f"The llama.cpp engine does not support Config.{name}.")
        if config.extensions:
            raise UnsupportedFeatureError(
                f"The llama.cpp engine takes no Config.extensions ({sorted(config.extensions)}); "
                "pass llama.cpp options as llama_kwargs to the engine instead."
            )
        messages = self._messages(request)
        kwargs: dict[str, Any] = {
            "messages": messages,
            "temperature": config.temperature if config.temperature is not None else 0.0,
            "max_tokens": config.max_tokens or self.default_max_tokens,
            "seed": config.seed,
            "stop": list(config.stop) or None,
        }
        for name in ("top_p", "top_k", "frequency_penalty", "presence_penalty"):
            value = getattr(config, name)
            if value is not None:
                kwargs[name] = value
        gbnf = None
        if self.grammar == "auto":
            system = messages[0]["content"] if messages and messages[0]["role"] == "system" else _system_text(request)
            try:
                gbnf = derive_gbnf(
                    system=system,
                    messages=messages,
                    response_format=config.response_format,
                    max_tokens=kwargs["max_tokens"],
                )
            except Exception:  # an exotic schema llama.cpp's converter rejects: decode unconstrained
                _logger.warning("Could not derive a grammar for this request; decoding without it.", exc_info=True)
        return kwargs, gbnf

    def _messages(self, request: Request) -> list[dict[str, str]]:
        system = _system_text(request)
        messages: list[dict[str, str]] = []
        for message in request.messages:
            if not all(isinstance(part, TextPart) for part in message.parts):
                kinds = sorted({type(part).__name__ for part in message.parts})
                raise UnsupportedFeatureError(f"The llama.cpp engine takes text only, got {kinds}.")
            text = "".join(part.text for part in message.parts)
            if message.role == "developer":
                system = f"{system}\n\n{text}" if system else text
            elif message.role in ("user", "assistant"):
                messages.append({"role": message.role, "content": text})
            else:
                raise UnsupportedFeatureError(f"The llama.cpp engine cannot send {message.role!r} messages.")
        if system:
            if self.merge_system_into_user:
                first_user = next((m for m in messages if m["role"] == "user"), None)
                if first_user is not None:
                    first_user["content"] = f"{system}\n\n{first_user['content']}"
                else:
                    messages.insert(0, {"role": "user", "content": system})
            else:
                messages.insert(0, {"role": "system", "content": system})
        return messages


class AsyncLlamaCppEngine:
    """Async counterpart of :class:`LlamaCppEngine` (required by ``dspy.LM`` for ``acall``/``aforward``).

    Runs the sync engine in a worker thread, so an event loop stays responsive while llama.cpp computes; calls on
    the same model still run one at a time under its lock.

    Args:
        engine: The sync engine to wrap; both share one model.
    """

    supports_function_calling = False
    supports_reasoning = False
    supports_response_schema = True
    supported_params = LlamaCppEngine.supported_params

    def __init__(self, engine: LlamaCppEngine) -> None:
        self.engine = engine

    async def complete(self, request: Request) -> Response:
        """Run one chat completion without blocking the event loop."""
        return await asyncio.to_thread(self.engine.complete, request)

    async def stream(self, request: Request) -> AsyncIterator[Any]:
        """Stream events for one request (produced whole, then replayed)."""
        response = await self.complete(request)
        for event in response_to_events(response):
            yield event

    async def aclose(self) -> None:
        """No-op: the model is shared process-wide."""

    def __deepcopy__(self, memo: dict[int, Any]) -> AsyncLlamaCppEngine:
        return self

    def dump_state(self) -> dict[str, Any]:
        """Same state as the wrapped sync engine."""
        return self.engine.dump_state()

    @classmethod
    def load_state(cls, state: Mapping[str, Any]) -> AsyncLlamaCppEngine:
        """Rebuild from :meth:`dump_state` output."""
        return cls(LlamaCppEngine.load_state(state))


def _trim_prefix_cache(llama: Any, prompt_tokens: int) -> None:
    """Keep only the first ``prompt_tokens - 2`` tokens of the KV cache after a completion.

    llama-cpp-python reuses the longest cached prefix of the next prompt and evaluates the rest. Evaluated alone
    (a suffix of one token, e.g. when the same prompt comes again), a token's logits differ in the last bits from
    the batched evaluation of a fresh prompt, and greedy decoding can then pick another word late in the reply:
    the same request at temperature 0 gave two different answers depending on what ran before. Dropping the
    generated tokens and the last two prompt tokens makes every suffix at least two tokens long, which measured
    bit-identical to a fresh evaluation, while the shared system prompt stays cached.
    """
    keep = max(0, prompt_tokens - 2)
    if llama.n_tokens <= keep:
        return
    ctx = getattr(llama, "_ctx", None)
    remove = getattr(ctx, "kv_cache_seq_rm", None)
    if callable(remove) and remove(-1, keep, -1):
        llama.n_tokens = keep
    else:  # no partial removal in this build: start from scratch next time (slower, still deterministic)
        llama.reset()


def _system_text(request: Request) -> str | None:
    system = request.system
    if system is None or isinstance(system, str):
        return system
    return "".join(getattr(part, "text", "") for part in system)


_GRAMMAR_CACHE_SIZE = 64
_grammars: collections.OrderedDict[str, Any] = collections.OrderedDict()
_grammars_lock = threading.Lock()


def _compile_grammar(gbnf: str, llama: Any) -> Any | None:
    """A ``LlamaGrammar`` for ``gbnf``, or ``None`` (with a warning) if llama.cpp cannot parse it.

    llama-cpp-python does not check the grammar sampler it creates: an unparsable grammar crashes the process
    with a segmentation fault. Each new grammar is therefore parsed once here, and a derived grammar that fails
    degrades to unconstrained decoding instead of taking the program down.
    """
    with _grammars_lock:
        if gbnf in _grammars:
            _grammars.move_to_end(gbnf)
            return _grammars[gbnf]
    llama_cpp = require_llama_cpp()
    sampler = llama_cpp.llama_sampler_init_grammar(llama._model.vocab, gbnf.encode("utf-8"), b"root")
    if sampler:
        llama_cpp.llama_sampler_free(sampler)
        grammar = llama_cpp.LlamaGrammar.from_string(gbnf, verbose=False)
    else:
        grammar = None
        _logger.warning(
            "llama.cpp rejected the grammar derived for this request; decoding without it. "
            "Please report this with the grammar:\n%s",
            gbnf,
        )
    with _grammars_lock:
        _grammars[gbnf] = grammar
        while len(_grammars) > _GRAMMAR_CACHE_SIZE:
            _grammars.popitem(last=False)
    return grammar
