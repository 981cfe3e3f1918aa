"""The data root: one folder (or fsspec URL) that holds everything geoscout writes.

Its layout (every relative path) is named in ``geo_assets.layout``. Every file is written to
a temporary name and renamed into place, so a crash never leaves a half-written file under
its final name.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import fsspec

from geo_assets import layout
from geo_assets.errors import InputError

CHUNK_BYTES = 1 << 20
PROJECT_ROOT = Path(__file__).resolve().parent.parent
DATA_ROOT_ENV = "GEOSCOUT_DATA_ROOT"
STAGE_DIR_ENV = "GEOSCOUT_STAGE_DIR"
TRANSFER_THREADS = 16  # object-store requests in flight while a stage is filled or published


def default_data_root() -> str:
    """``$GEOSCOUT_DATA_ROOT``, else ``.geoscout/data`` in the project."""
    return os.environ.get(DATA_ROOT_ENV, str(PROJECT_ROOT / ".geoscout" / "data"))


def stage_dir() -> Path:
    """Where steps on a remote data root stage their files: ``$GEOSCOUT_STAGE_DIR``, else
    ``geoscout-stage`` in the system temporary folder (docs/operations.md, "Local cache")."""
    return Path(os.environ.get(STAGE_DIR_ENV) or Path(tempfile.gettempdir()) / "geoscout-stage")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_stream(f: BinaryIO) -> str:
    """SHA-256 of an open binary file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    for block in iter(lambda: f.read(CHUNK_BYTES), b""):
        digest.update(block)
    return digest.hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 of a local file, streamed."""
    with open(path, "rb") as f:
        return sha256_stream(f)


@contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``final`` to write; it is renamed over ``final`` only
    when the block finishes, and removed otherwise."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{final.name}.tmp-{uuid.uuid4().hex}")
    try:
        yield tmp
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: str | os.PathLike, data: Any, *, indent: int = 1,
                      sort_keys: bool = True) -> None:
    """Write ``data`` as JSON to a local ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=indent, sort_keys=sort_keys, default=str))


@contextmanager
def _synced(path: Path) -> Iterator[io.BufferedWriter]:
    with open(path, "wb") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


@dataclass(frozen=True)
class DataRoot:
    """A data root on a local path or any fsspec URL (``s3://bucket/prefix``)."""

    url: str
    storage_options: dict | None = None

    def __post_init__(self) -> None:
        if not self.url:
            raise InputError("data root is empty: set it to a folder or an fsspec URL")

    @property
    def fs(self) -> fsspec.AbstractFileSystem:
        fs, _ = fsspec.core.url_to_fs(self.url, **(self.storage_options or {}))
        return fs

    @property
    def base(self) -> str:
        _, path = fsspec.core.url_to_fs(self.url, **(self.storage_options or {}))
        return path.rstrip("/")

    @property
    def is_local(self) -> bool:
        return "://" not in self.url or self.url.startswith("file://")

    def path(self, *parts: str) -> str:
        """Path inside the root, in the filesystem's own form (no protocol)."""
        return posixpath.join(self.base, *parts)

    def local_path(self, *parts: str) -> Path:
        if not self.is_local:
            raise InputError(f"data root {self.url!r} is not a local folder")
        return Path(self.path(*parts))

    def uri(self, *parts: str) -> str:
        """Full URL of a path inside the root (with protocol for remote roots)."""
        if self.is_local:
            return self.path(*parts)
        protocol = self.url.split("://", 1)[0]
        return f"{protocol}://{self.path(*parts)}"

    # --- atomic writes -------------------------------------------------------------------

    def write_bytes(self, relpath: str, data: bytes) -> str:
        """Write ``data`` to ``relpath`` atomically; return the full path."""
        final = self.path(relpath)
        if self.is_local:
            with atomic_path(final) as tmp, _synced(tmp) as f:
                f.write(data)
        else:  # object stores publish a PUT whole or not at all
            self.fs.pipe_file(final, data)
        return final

    @contextmanager
    def open_atomic(self, relpath: str) -> Iterator[io.BufferedWriter]:
        """Open a file for writing that appears under ``relpath`` only when closed cleanly."""
        final = self.path(relpath)
        if self.is_local:
            with atomic_path(final) as tmp, _synced(tmp) as f:
                yield f
        else:
            buf = io.BytesIO()
            yield buf
            self.fs.pipe_file(final, buf.getvalue())

    def read_bytes(self, relpath: str) -> bytes:
        return self.fs.cat_file(self.path(relpath))

    @contextmanager
    def parquet_file(self, relpath: str):
        """A ``pyarrow.parquet.ParquetFile`` of a file under the root. A local root's file is
        opened by Arrow itself: Arrow reading a Python file object, with polars loaded in the
        process, aborted it at exit now and then ("terminate called without an active
        exception", status 134). Remote roots have no other way than an fsspec file."""
        import pyarrow.parquet as pq

        if self.is_local:
            with pq.ParquetFile(self.path(relpath)) as parquet:
                yield parquet
            return
        with self.fs.open(self.path(relpath), "rb") as f, pq.ParquetFile(f) as parquet:
            yield parquet

    def sha256(self, relpath: str) -> str:
        """SHA-256 of a file under the root, streamed."""
        with self.fs.open(self.path(relpath), "rb") as f:
            return sha256_stream(f)

    def exists(self, relpath: str) -> bool:
        return self.fs.exists(self.path(relpath))

    def glob(self, pattern: str) -> list[str]:
        """Relative paths under the root matching ``pattern``, sorted."""
        base = self.base + "/"
        # Listings cached in this process may be stale (another process, a pod, wrote): drop
        # them all, as s3fs drops a path and its parents only, not the folders below it.
        self.fs.invalidate_cache()
        return sorted(p.removeprefix(base)
                      for p in self.fs.glob(self.path(pattern)))

    # --- content-addressed images ---------------------------------------------------------

    def put_image(self, data: bytes, ext: str = "jpg") -> tuple[str, bool]:
        """Store image bytes once by SHA-256. Returns (sha256, newly_written)."""
        digest = sha256_hex(data)
        rel = layout.image(digest, ext)
        if self.exists(rel):
            return digest, False
        self.write_bytes(rel, data)
        return digest, True

    def get_image(self, sha256: str, ext: str = "jpg") -> bytes:
        return self.read_bytes(layout.image(sha256, ext))

    # --- staging: local files for libraries that need them --------------------------------

    @contextmanager
    def staged(self, reads: tuple[str, ...] | list[str] = (),
               writes: tuple[str, ...] | list[str] = ()) -> Iterator[Path]:
        """A local folder that stands for the root during one step.

        A local root is its own folder (nothing is copied). For a remote root, the files and
        folders ``reads`` (relative paths; missing ones are skipped) are downloaded into a
        fresh folder under ``stage_dir()``; when the block finishes cleanly, the new or
        changed files under ``writes`` are uploaded entry by entry in the order given (one PUT
        per file, a folder's files ``TRANSFER_THREADS`` at a time; a file named in ``writes``
        is uploaded at its own place, not with its folder, so an index can go last), and files under a folder that was both read and written but deleted
        locally are deleted remotely. The folder is removed when the block ends; a failure
        uploads nothing."""
        if self.is_local:
            yield Path(self.base)
            return
        base = stage_dir()
        base.mkdir(parents=True, exist_ok=True)
        local = Path(tempfile.mkdtemp(prefix="stage-", dir=base))
        try:
            fetched = self._download(reads, local)
            yield local
            self._upload(writes, local, fetched, reads)
        finally:
            shutil.rmtree(local, ignore_errors=True)

    def fetch(self, relpaths: list[str], local: Path) -> None:
        """Download the files ``relpaths`` (relative, existing) into the stage folder ``local``,
        TRANSFER_THREADS at a time; nothing to do for a local root (its own stage)."""
        if self.is_local:
            return
        for rel in relpaths:
            (local / rel).parent.mkdir(parents=True, exist_ok=True)
        _each(lambda f: self.fs.get_file(self.path(f), str(local / f)), list(relpaths))

    def publish(self, local: Path, relpaths: list[str]) -> None:
        """Upload the stage files ``local/<rel>`` to ``rel`` (one PUT each, TRANSFER_THREADS
        at a time); nothing to do for a local root (its own stage)."""
        if not self.is_local:
            _each(lambda f: self.fs.put_file(str(local / f), self.path(f)), list(relpaths))

    def remove(self, relpaths: list[str]) -> None:
        """Delete files under the root; missing ones are skipped."""
        for rel in relpaths:
            if self.exists(rel):
                self.fs.rm_file(self.path(rel))

    def _files_under(self, rel: str) -> list[str]:
        """Relative paths of the files at ``rel`` (a file or a folder), none if missing."""
        remote = self.path(rel)
        self.fs.invalidate_cache(remote)  # another process (a pod, torchrun) may have written
        if self.fs.isdir(remote):
            prefix = self.base + "/"
            return sorted(p.removeprefix(prefix) for p in self.fs.find(remote))
        return [rel] if self.fs.exists(remote) else []

    def _download(self, reads, local: Path) -> dict[str, tuple[int, int]]:
        """Copy ``reads`` into ``local`` (TRANSFER_THREADS files at a time); (size, mtime) of
        each copy, to spot the files a step changed."""
        files = sorted({f for rel in reads for f in self._files_under(rel)})
        self.fetch(files, local)
        return {f: _stamp(local / f) for f in files}

    def _upload(self, writes, local: Path, fetched: dict, reads) -> None:
        explicit = {w for w in writes if (local / w).is_file()}
        done: set[str] = set()
        for rel in writes:  # in order: a folder's files together, then the next entry
            path = local / rel
            files = [rel] if path.is_file() else [
                f for f in (p.relative_to(local).as_posix() for p in sorted(path.rglob("*"))
                            if p.is_file() and ".tmp-" not in p.name)
                if f not in explicit] if path.is_dir() else []
            changed = [f for f in files
                       if f not in done and fetched.get(f) != _stamp(local / f)]
            self.publish(local, changed)
            done.update(files)
        for rel in writes:  # a folder read whole and written: mirror its deletions, last
            if any(_within(rel, r) for r in reads):
                gone = [f for f in fetched if _within(f, rel) and not (local / f).exists()]
                _each(lambda f: self.fs.rm_file(self.path(f)), gone)


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _each(task, items: list) -> None:
    """``task`` for every item, TRANSFER_THREADS at a time (object-store requests wait on
    the network, not on the CPU); the first error is raised."""
    if len(items) <= 1:
        for item in items:
            task(item)
        return
    with ThreadPoolExecutor(min(TRANSFER_THREADS, len(items))) as pool:
        list(pool.map(task, items))


def _within(path: str, folder: str) -> bool:
    if folder in ("", "."):  # the whole root
        return True
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def is_url(location: str | os.PathLike) -> bool:
    """True for an fsspec URL of a remote store (``s3://...``), False for local paths."""
    text = str(location)
    return "://" in text and not text.startswith("file://")


@contextmanager
def local_copy(location: str | os.PathLike) -> Iterator[Path]:
    """A local path of one file: the file itself when local, else a copy downloaded into
    ``stage_dir()`` for the block (for libraries such as ``torch.load`` that want a path)."""
    if not is_url(location):
        yield Path(str(location).removeprefix("file://"))
        return
    folder, name = str(location).rstrip("/").rsplit("/", 1)
    root = DataRoot(folder)
    root.fs.invalidate_cache(root.base)
    if not root.exists(name):
        raise InputError(f"{location}: no such file")
    with root.staged([name]) as local:
        yield local / name
