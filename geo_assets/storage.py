"""The data root: one folder (or fsspec URL) that holds everything geoscout writes.

Layout under the root (see README "Outputs")::

    land/                       cached Natural Earth downloads
    grid/grid_cells.parquet     the land-filtered grid (GeoParquet)
    images/ab/cd/<sha256>.jpg   raw images, content-addressed, written once
    manifests/cells/<cell>.parquet   one manifest per crawl cell
    manifests/image_manifest.parquet the merged manifest
    datasets/...                hierarchy, splits, shards
    models/<name>/...           checkpoints, model cards
    reports/<name>/...          evaluation reports

Every file is written to a temporary name and renamed into place, so a crash never leaves
a half-written file under its final name.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import fsspec

from geo_assets.errors import InputError


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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

    def exists(self, relpath: str) -> bool:
        return self.fs.exists(self.path(relpath))

    def glob(self, pattern: str) -> list[str]:
        """Relative paths under the root matching ``pattern``, sorted."""
        base = self.base + "/"
        return sorted(p.removeprefix(base)
                      for p in self.fs.glob(self.path(pattern)))

    # --- content-addressed images ---------------------------------------------------------

    @staticmethod
    def image_relpath(sha256: str, ext: str = "jpg") -> str:
        return f"images/{sha256[:2]}/{sha256[2:4]}/{sha256}.{ext}"

    def put_image(self, data: bytes, ext: str = "jpg") -> tuple[str, bool]:
        """Store image bytes once by SHA-256. Returns (sha256, newly_written)."""
        digest = sha256_hex(data)
        rel = self.image_relpath(digest, ext)
        if self.exists(rel):
            return digest, False
        self.write_bytes(rel, data)
        return digest, True

    def get_image(self, sha256: str, ext: str = "jpg") -> bytes:
        return self.read_bytes(self.image_relpath(sha256, ext))
