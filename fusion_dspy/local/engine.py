"""DSPy 3.4 custom engines that run GGUF models in-process with llama.cpp (the prebuilt ``xllamacpp`` wheel).

DSPy owns caching, retries, ``n`` fan-out, history and callbacks; an engine turns one canonical
``dspy.lm15.Request`` into one ``dspy.lm15.Response``. This module adds what a local model needs on top: one shared
llama.cpp server per model file, requests one at a time under its lock, grammar-constrained decoding so small
models emit parseable replies, and chat-template quirks.

**Reproducible replies.** By default every request is evaluated from an empty KV cache (``prompt_cache=False``).
With llama.cpp's prompt cache on, the part of a prompt that is not cached is evaluated in a batch of another size,
which changes the last bits of the logits; measured on Qwen2.5-0.5B, 3 of 24 replies (T=0 and seeded T=0.8)
differed from a fresh evaluation of the same request, depending on which request ran before. Without it, a
reply is a function of the request (and its seed) alone, whatever order threads send requests in.

Examples:
    >>> import dspy
    >>> from fusion_dspy.local.engine import AsyncLlamaCppEngine, LlamaCppEngine
    >>> engine = LlamaCppEngine(model="smollm2-135m")  # doctest: +SKIP
    >>> lm = dspy.LM("local/smollm2-135m", engine=engine, async_engine=AsyncLlamaCppEngine(engine))  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
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
from fusion_dspy.local._shared import COMPUTE_LOCK
from fusion_dspy.local._shared import SharedServer
from fusion_dspy.local._shared import check_shared_settings
from fusion_dspy.local._shared import get_shared_server
from fusion_dspy.local._shared import require_runtime
from fusion_dspy.local.budget import MARKER_TOKENS
from fusion_dspy.local.budget import Outcome
from fusion_dspy.local.budget import Reply
from fusion_dspy.local.budget import field_shares
from fusion_dspy.local.budget import reply_steps
from fusion_dspy.local.grammar import GrammarMode
from fusion_dspy.local.grammar import OutputField
from fusion_dspy.local.grammar import chat_fields
from fusion_dspy.local.grammar import derive_gbnf

__all__ = ["AsyncLlamaCppEngine", "LlamaCppEngine"]

_logger = logging.getLogger(__name__)
#: Guards every engine's ``cut_counts`` (module-level, so an engine stays picklable).
_CUT_LOCK = threading.Lock()

_BAD_GRAMMAR = "failed to parse grammar"
#: The seed llama.cpp replaces with a random one, and the fixed seed sent in its place (one seed shares it).
_LLAMA_DEFAULT_SEED = 0xFFFFFFFF
_RANDOM_SEED_STANDIN = 0x7FFFFFFF


class LlamaCppEngine:
    """Synchronous DSPy engine backed by a shared in-process llama.cpp server (``xllamacpp``).

    The model is resolved (and for catalog models, sha256-verified) at construction, so a missing package fails
    where the LM is built; it is loaded on the first call and shared by every engine on the same file.

    Args:
        model: Catalog name (``"smollm2-135m"``, ``"qwen2.5-0.5b"``, ...) or path of a ``.gguf`` file.
        n_ctx: Context window in tokens. DSPy prompts with demos grow quickly; 4096 fits the bundled models.
        n_threads: CPU threads; defaults to ``os.cpu_count()``. On a machine whose cores are busy with other
            work, ``1`` can be several times faster: ggml's worker threads spin-wait on each other.
        n_batch: Prompt-processing batch size.
        n_gpu_layers: Layers to offload to a GPU, for a GPU build of the runtime (e.g. ``99`` for all); ``None``
            keeps the runtime's default. The CPU wheel from PyPI ignores it.
        grammar: ``"auto"`` constrains decoding to the adapter's reply format (ChatAdapter field markers, or the
            JSON schema in ``response_format``) whenever one can be derived; ``"off"`` samples freely.
        prompt_cache: Reuse the KV cache of the longest prompt prefix seen before. Faster for repeated prompts,
            but a reply may then depend on the request that ran before it (see the module docstring).
        default_max_tokens: Used when the request sets no ``max_tokens``.
        chat_format: llama.cpp chat template name to force (``"gemma"``, ``"chatml"``, ...); defaults to the
            catalog entry's, else the GGUF's own template.
        merge_system_into_user: Prepend the system prompt to the first user message (for templates that drop
            system messages); defaults to the catalog entry's setting.
        cache_dir: Where chunked catalog models are assembled (see ``catalog.default_cache_dir``).
        verbose: Let llama.cpp log to stderr.

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
        n_gpu_layers: int | None = None,
        grammar: GrammarMode = "auto",
        prompt_cache: bool = False,
        default_max_tokens: int = 256,
        chat_format: str | None = None,
        merge_system_into_user: bool | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        verbose: bool = False,
    ) -> None:
        if grammar not in ("auto", "off"):
            raise ValueError(f"grammar must be 'auto' or 'off', not {grammar!r}.")
        for name, value in (("n_ctx", n_ctx), ("n_batch", n_batch), ("default_max_tokens", default_max_tokens)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, not {value!r}.")
        if n_threads is not None and (not isinstance(n_threads, int) or n_threads < 1):
            raise ValueError(f"n_threads must be a positive int or None (all cores), not {n_threads!r}.")
        spec = catalog.MODELS.get(os.fspath(model)) if isinstance(model, str) else None
        self.model = os.fspath(model)
        self.spec = spec
        self.path: Path = catalog.resolve_model_path(model, cache_dir=cache_dir)
        self.grammar: GrammarMode = grammar
        self.prompt_cache = bool(prompt_cache)
        self.default_max_tokens = default_max_tokens
        self.merge_system_into_user = (
            merge_system_into_user if merge_system_into_user is not None else bool(spec and spec.merge_system_into_user)
        )
        self._options: dict[str, Any] = {
            "n_ctx": n_ctx,
            "n_threads": n_threads,
            "n_batch": n_batch,
            "n_gpu_layers": n_gpu_layers,
            "chat_format": chat_format,
            "cache_dir": None if cache_dir is None else os.fspath(cache_dir),
            "verbose": verbose,
        }
        self._settings: dict[str, Any] = {
            "n_ctx": n_ctx,
            "n_threads": n_threads or os.cpu_count() or 1,
            "n_batch": n_batch,
            "n_gpu_layers": n_gpu_layers,
            "chat_template": chat_format or (spec.chat_format if spec else None),
            "verbose": verbose,
        }
        self._shared: SharedServer | None = None
        #: Replies whose free-text field was closed at its share of max_tokens, per field (see ``local.cut_counts``).
        self.cut_counts: collections.Counter[str] = collections.Counter()
        require_runtime()  # fail where the LM is built, not on its first call
        check_shared_settings(self.path, self._settings)

    # -- DSPy engine contract -------------------------------------------------------------------------------

    def complete(self, request: Request) -> Response:
        """Run one chat completion for a canonical DSPy request.

        A ChatAdapter reply under a grammar may take a few calls: a free-text field that runs out of its share of
        ``max_tokens`` is closed and the reply continued (see :mod:`fusion_dspy.local.budget`). The calls hold the
        model's lock together and their usage is summed.
        """
        body, gbnf, fields = self._request_body(request)
        shared = self.shared_server()
        with COMPUTE_LOCK, shared.lock:
            if fields is not None:
                text, length, outs = self._budgeted(shared, body, fields)
            else:
                out, _ = self._chat(shared, body, gbnf)
                choice, outs = out["choices"][0], [out]
                text, length = choice["message"].get("content") or "", choice.get("finish_reason") == "length"
        return Response(
            id=outs[-1].get("id"),
            model=request.model,
            message=Message.assistant([TextPart(text)]),
            finish_reason="length" if length else "stop",
            usage=_summed_usage([out.get("usage") or {} for out in outs]),
        )

    def _chat(self, shared: SharedServer, body: dict[str, Any], gbnf: str | None) -> tuple[dict[str, Any], bool]:
        """One server call under ``gbnf`` (if any): its output, and whether the grammar was used. A grammar
        llama.cpp cannot parse is reported once and the call decoded without it; a server error is raised."""
        if gbnf is not None and gbnf not in _rejected_grammars:
            body = {**body, "grammar": gbnf}
        out = shared.server.handle_chat_completions(body)
        if "grammar" in body and _BAD_GRAMMAR in str((out.get("error") or {}).get("message", "")):
            _rejected_grammars.add(gbnf)
            _logger.warning(
                "llama.cpp rejected the grammar derived for this request; decoding without it. "
                "Please report this with the grammar:\n%s",
                gbnf,
            )
            body = {key: value for key, value in body.items() if key != "grammar"}
            out = shared.server.handle_chat_completions(body)
        if out.get("error"):
            raise self._error(out["error"])
        return out, "grammar" in body

    def _budgeted(
        self, shared: SharedServer, body: dict[str, Any], fields: list[OutputField]
    ) -> tuple[str, bool, list[dict[str, Any]]]:
        """Drive :func:`~fusion_dspy.local.budget.reply_steps`: the reply text, whether the budget ran out,
        and every call's server output."""
        steps = reply_steps(fields, body["max_tokens"])
        outs: list[dict[str, Any]] = []
        step = next(steps)
        while True:
            call = {**body, "max_tokens": step.max_tokens}
            if step.prefill:
                # Continue the reply as the assistant's own text. The prompt and the prefill were just evaluated
                # under this lock, so reusing that KV cache keeps the reply a function of the request.
                call["messages"] = [*body["messages"], {"role": "assistant", "content": step.prefill}]
                call["cache_prompt"] = True
            out, constrained = self._chat(shared, call, step.gbnf)
            outs.append(out)
            choice = out["choices"][0]
            content = choice["message"].get("content") or ""
            text = content if content.startswith(step.prefill) else step.prefill + content
            length = choice.get("finish_reason") == "length"
            if not constrained:  # no grammar, no field structure to continue
                return text, length, outs
            completion = int((out.get("usage") or {}).get("completion_tokens") or step.max_tokens)
            try:
                step = steps.send(Outcome(text=text, length=length, completion_tokens=completion))
            except StopIteration as stop:
                reply: Reply = stop.value
                break
        shares = field_shares(fields, body["max_tokens"])
        self._note_cut(reply.cut, body["max_tokens"],
                       {field.name: tokens - MARKER_TOKENS for field, tokens in zip(fields, shares, strict=True)})
        return reply.text, reply.length, outs

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
            "prompt_cache": self.prompt_cache,
            "default_max_tokens": self.default_max_tokens,
            "merge_system_into_user": self.merge_system_into_user,
            **self._options,
        }

    @classmethod
    def load_state(cls, state: Mapping[str, Any]) -> LlamaCppEngine:
        """Rebuild an engine from :meth:`dump_state` output."""
        return cls(**dict(state))

    # -- helpers --------------------------------------------------------------------------------------------

    def shared_server(self) -> SharedServer:
        """The shared llama.cpp server for this model, loaded on first use."""
        if self._shared is None:
            self._shared = get_shared_server(self.path, **self._settings)
        return self._shared

    @property
    def base_url(self) -> str:
        """OpenAI-compatible HTTP endpoint of the loaded model on 127.0.0.1 (loads it if needed)."""
        return self.shared_server().base_url

    def _note_cut(
        self, names: tuple[str, ...], max_tokens: int, share: Mapping[str, int]) -> None:
        """Count, and warn once per field, a free-text value closed because it ran out of its share of
        ``max_tokens``: the reply parses, but the model was stopped mid-thought."""
        if not names:
            return
        with _CUT_LOCK:
            fresh = [name for name in names if name not in self.cut_counts]
            self.cut_counts.update(names)
        if fresh:
            _logger.warning(
                "%s: %s ran out of its share of max_tokens=%d (%s tokens) and was closed there, so it was most "
                "likely cut short; the reply still parses. Raise max_tokens. (Warned once per field; "
                "fusion_dspy.local.cut_counts(lm) counts them.)",
                self.model, ", ".join(f"`{name}`" for name in fresh), max_tokens,
                ", ".join(str(share[name]) for name in fresh),
            )

    def _error(self, error: Mapping[str, Any]) -> Exception:
        message = f"{self.path.name}: {error.get('message', error)}"
        kind = error.get("type", "")
        if kind == "exceed_context_size_error":
            return ContextLengthError(
                f"{message}. Raise n_ctx (now {self._settings['n_ctx']}) in "
                "fusion_dspy.local.lm(..., n_ctx=...) or shorten the prompt."
            )
        if kind == "invalid_request_error" or error.get("code") == 400:
            return InvalidRequestError(message)
        return ServerError(f"{message} (llama.cpp failed)")

    def _request_body(
        self, request: Request
    ) -> tuple[dict[str, Any], str | None, list[OutputField] | None]:
        """The chat-completion request for the server, and how to constrain its reply: a GBNF grammar for one
        call, or the ChatAdapter fields whose reply :func:`~fusion_dspy.local.budget.reply_steps` writes."""
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
                "set llama.cpp options on the engine instead."
            )
        messages = self._messages(request)
        body: dict[str, Any] = {
            "messages": messages,
            "temperature": config.temperature if config.temperature is not None else 0.0,
            "max_tokens": config.max_tokens or self.default_max_tokens,
            "cache_prompt": self.prompt_cache,
        }
        if config.seed is not None:
            body["seed"] = _llama_seed(config.seed)
        if config.stop:
            body["stop"] = list(config.stop)
        for name in ("top_p", "top_k", "frequency_penalty", "presence_penalty"):
            value = getattr(config, name)
            if value is not None:
                body[name] = value
        gbnf, fields = None, None
        if self.grammar == "auto":
            system = messages[0]["content"] if messages and messages[0]["role"] == "system" else _system_text(request)
            try:
                if config.response_format is None:
                    fields = chat_fields(system=system, messages=messages)
                if fields is None:
                    gbnf = derive_gbnf(system=system, messages=messages, response_format=config.response_format)
            except Exception:  # an exotic schema the converter does not cover: decode unconstrained
                _logger.warning("Could not derive a grammar for this request; decoding without it.", exc_info=True)
        return body, gbnf, fields

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


def _summed_usage(usages: list[Mapping[str, Any]]) -> Usage:
    """One Usage for the calls of a reply (each call's prompt counts: a continuation re-reads the reply so far)."""

    def total(key: str, nested: str | None = None) -> int | None:
        values = [(u.get(key) or {}).get(nested) if nested else u.get(key) for u in usages]
        present = [int(v) for v in values if v is not None]
        return sum(present) if present else None

    return Usage(
        input_tokens=total("prompt_tokens"),
        output_tokens=total("completion_tokens"),
        total_tokens=total("total_tokens"),
        cache_read_tokens=total("prompt_tokens_details", "cached_tokens"),
    )


def _llama_seed(seed: int) -> int:
    """``seed`` as llama.cpp's 32-bit sampling seed. llama.cpp reads 0xFFFFFFFF (``LLAMA_DEFAULT_SEED``) as "draw a
    random seed", so the seeds that land there (``-1``, ``2**32 - 1``, ...) go to another fixed seed instead;
    every other seed keeps the value it always had."""
    value = int(seed) & 0xFFFFFFFF
    return _RANDOM_SEED_STANDIN if value == _LLAMA_DEFAULT_SEED else value


def _system_text(request: Request) -> str | None:
    system = request.system
    if system is None or isinstance(system, str):
        return system
    return "".join(getattr(part, "text", "") for part in system)


#: Grammars llama.cpp refused to parse (a bug in the derivation): not sent again in this process.
_rejected_grammars: set[str] = set()
