"""Lineage: which datasets, splits, shards and models an image fed, and what fed a model.

Plain functions over the files in the data root (see docs/architecture.md); no Dagster
import, so the CLI and tests can answer lineage questions without an instance. Sources:

- ``manifests/image_manifest.parquet``: the image's row (source, cell, kept / drop reason);
- ``manifests/cell_versions.parquet``: the version (sha256) of the per-cell manifest file;
- ``datasets/dataset.json``, ``datasets/splits.parquet``, ``datasets/shards/index.json``:
  the current dataset version, the image's split and fold, and the shard that holds it;
- ``models/<run>/model_card.json`` and ``models/<run>/train_image_ids.parquet``: every model
  and the exact images it trained on.

The model card keys read here are listed in ``CARD_KEYS``; each accepts a few spellings so a
card written by an older training run still reads.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import tarfile
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow.parquet as pq

from geo_assets.errors import DataUnavailableError, InputError
from geo_assets.storage import DataRoot

MANIFEST = "manifests/image_manifest.parquet"
CELL_VERSIONS = "manifests/cell_versions.parquet"
DATASET = "datasets/dataset.json"
SPLITS = "datasets/splits.parquet"
SHARD_INDEX = "datasets/shards/index.json"
SHARD_DIR = "datasets/shards"
SHARD_CONTENTS = "datasets/shards/contents.parquet"
MODELS = "models"
CARD = "model_card.json"
TRAIN_IDS = "train_image_ids.parquet"

# Canonical model card key -> spellings accepted (first match wins).
CARD_KEYS: dict[str, tuple[str, ...]] = {
    "manifest_sha256": ("manifest_hash", "manifest_sha256"),
    "cell_versions": ("cell_versions", "per_cell_versions"),
    "shards": ("shards", "shard_list"),
    "split": ("split", "split_settings", "splits"),
    "config": ("config", "train_config"),
    "train_image_ids": ("train_image_ids", "image_ids_file", "train_image_ids_file"),
    "run_ids": ("run_ids", "dagster_run_ids", "dagster_run_id"),
    "levels": ("levels",),
    "created_at": ("created_at",),
}

_ROW_FIELDS = ("source", "source_id", "group_id", "cell_id", "sha256", "kept", "drop_reason",
               "license", "attribution", "lat_deg", "lon_deg")


def as_root(root: DataRoot | str) -> DataRoot:
    return root if isinstance(root, DataRoot) else DataRoot(str(root))


def card_get(card: dict, key: str, default: Any = None) -> Any:
    """Read a model card value by its canonical key (see ``CARD_KEYS``)."""
    for name in CARD_KEYS.get(key, (key,)):
        if name in card:
            return card[name]
    return default


def file_sha256(root: DataRoot, relpath: str) -> str | None:
    """SHA-256 of a file under the root, or None when it does not exist."""
    if not root.exists(relpath):
        return None
    digest = hashlib.sha256()
    with root.fs.open(root.path(relpath), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_json(root: DataRoot, relpath: str) -> dict | None:
    if not root.exists(relpath):
        return None
    try:
        return json.loads(root.read_bytes(relpath))
    except json.JSONDecodeError as exc:
        raise InputError(f"{root.uri(relpath)} is not valid JSON ({exc}); rewrite it by "
                         "re-materializing the asset that owns it") from exc


def _filter_rows(root: DataRoot, relpath: str, column: str, value: str,
                 columns: list[str] | None = None) -> list[dict]:
    """Rows of a Parquet file where ``column == value`` (pushed down to the reader)."""
    if not root.exists(relpath):
        return []
    with root.fs.open(root.path(relpath), "rb") as f:
        names = pq.read_schema(f).names
        if column not in names:
            raise InputError(f"{root.uri(relpath)} has no column {column!r}; it was written by "
                             "an incompatible version, re-materialize it")
        wanted = [c for c in (columns or names) if c in names]
        f.seek(0)
        table = pq.read_table(f, columns=wanted, filters=[(column, "=", value)])
    return table.to_pylist()


# --- models ----------------------------------------------------------------------------------

@dataclass
class ModelRef:
    """A model and how an image (or a dataset) relates to it."""

    name: str
    path: str
    manifest_sha256: str | None = None
    created_at: str | None = None
    role: str | None = None          # "train" (trained on it) or "test" (evaluated on it)
    run_ids: Any = None


def list_models(root: DataRoot | str) -> list[str]:
    """Names of the models under ``models/`` that have a model card, sorted."""
    root = as_root(root)
    cards = root.glob(f"{MODELS}/*/{CARD}")
    return sorted(posixpath.basename(posixpath.dirname(c)) for c in cards)


def read_model_card(root: DataRoot | str, model: str) -> tuple[str, dict]:
    """Find a model by run name, ``models/<name>``, or a path/URL of its folder or card.

    Returns (the model's folder relative to the root or as given, the card)."""
    root = as_root(root)
    candidates = []
    name = model.rstrip("/")
    if name.endswith(CARD):
        name = posixpath.dirname(name)
    candidates.append(f"{MODELS}/{name}" if "/" not in name else name)
    for rel in candidates:
        card = _read_json(root, f"{rel}/{CARD}")
        if card is not None:
            return rel, card
    # A folder outside the data root (an exported model, a local copy).
    card = _read_json(DataRoot(name), CARD)
    if card is not None:
        return name, card
    known = ", ".join(list_models(root)) or "none"
    raise InputError(f"model {model!r}: no {CARD} under {root.uri(MODELS)}/{name} or {name}; "
                     f"models with a card: {known}")


def _train_ids_location(root: DataRoot, folder: str, card: dict) -> tuple[DataRoot, str] | None:
    """Where the model's ``train_image_ids.parquet`` is: in its folder under the root (the
    card may name it by file name or by the absolute path it was written to), else at that
    absolute path or URL."""
    ref = card_get(card, "train_image_ids") or TRAIN_IDS
    if isinstance(ref, dict):  # {"path": ..., "sha256": ...}
        ref = ref.get("path") or TRAIN_IDS
    ref = str(ref)
    if root.exists(f"{folder}/{posixpath.basename(ref)}"):
        return root, f"{folder}/{posixpath.basename(ref)}"
    if "/" in ref:
        head, name = posixpath.split(ref)
        outside = DataRoot(head)
        if outside.exists(name):
            return outside, name
    return None


def _model_ref(folder: str, card: dict, role: str | None = None) -> ModelRef:
    return ModelRef(name=card.get("run_name") or posixpath.basename(folder), path=folder,
                    manifest_sha256=card_get(card, "manifest_sha256"),
                    created_at=card_get(card, "created_at"), role=role,
                    run_ids=card_get(card, "run_ids"))


# --- image lineage -------------------------------------------------------------------------

@dataclass
class ImageLineage:
    image_id: str
    manifest: dict | None = None           # the image's manifest row (selected columns)
    cell_version: dict | None = None       # cell_id, source, version, n_rows, n_kept
    dataset: dict | None = None            # current dataset version: manifest hash, created_at
    split: dict | None = None              # split, fold, group_id
    shard: str | None = None               # shard file that holds the image
    models: list[ModelRef] = field(default_factory=list)
    dataset_versions: list[str] = field(default_factory=list)  # manifest hashes it was in

    def to_dict(self) -> dict:
        return asdict(self)


def _shard_file(name: str) -> str:
    return name if name.endswith(".tar") else f"{name}.tar"


def _find_in_shards(root: DataRoot, image_id: str, sha256: str | None,
                    split: dict | None) -> str | None:
    """Name of the shard that holds the image.

    ``datasets/shards/contents.parquet`` (one row per sample) answers directly; without it,
    the tar headers of the shards of the image's own split and fold are read (sample key =
    first 20 hex digits of the sha256), skipping the image bytes."""
    if root.exists(SHARD_CONTENTS):
        rows = _filter_rows(root, SHARD_CONTENTS, "image_id", image_id, ["image_id", "shard"])
        return rows[0]["shard"] if rows else None
    index = _read_json(root, SHARD_INDEX)
    if not index or not sha256 or not split:
        return None
    key = sha256[:20]
    test = split.get("split") == "test"
    for shard in index.get("shards", []):
        fold = shard.get("fold")
        if shard.get("split") != split.get("split"):
            continue
        if not (test or str(fold) == str(split.get("fold"))):
            continue
        rel = f"{SHARD_DIR}/{_shard_file(shard['name'])}"
        if not root.exists(rel):
            continue
        with root.fs.open(root.path(rel), "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
            for member in tar:
                if member.name.split(".", 1)[0] == key:
                    return shard["name"]
    return None


def _image_in_model(root: DataRoot, folder: str, card: dict, image_id: str) -> bool:
    where = _train_ids_location(root, folder, card)
    return bool(where and _filter_rows(*where, "image_id", image_id, ["image_id"]))


def image_lineage(root: DataRoot | str, image_id: str) -> ImageLineage:
    """Everything geoscout knows about where an image went: its manifest row and cell
    version, the current dataset version, its split and shard, and every model that trained
    on it (from the models' ``train_image_ids.parquet``) or was evaluated on it."""
    root = as_root(root)
    if not root.exists(MANIFEST) and not list_models(root):
        raise DataUnavailableError(
            f"no manifest ({root.uri(MANIFEST)}) and no models under {root.uri(MODELS)}: "
            "materialize image_manifest first, or point --data-root at the right root")
    out = ImageLineage(image_id=image_id)
    rows = _filter_rows(root, MANIFEST, "image_id", image_id)
    if rows:
        out.manifest = {k: rows[0].get(k) for k in _ROW_FIELDS if k in rows[0]}
        cell, source = rows[0].get("cell_id"), rows[0].get("source")
        versions = [r for r in _filter_rows(root, CELL_VERSIONS, "cell_id", cell)
                    if r.get("source") == source]
        out.cell_version = versions[0] if versions else None
    descriptor = _read_json(root, DATASET)
    if descriptor is not None:
        out.dataset = {"manifest_sha256": card_get(descriptor, "manifest_sha256"),
                       "created_at": descriptor.get("created_at"),
                       "levels": descriptor.get("levels")}
    splits = _filter_rows(root, SPLITS, "image_id", image_id)
    if splits:
        out.split = {k: splits[0].get(k) for k in ("split", "fold", "group_id")}
        if out.dataset and out.dataset.get("manifest_sha256"):
            out.dataset_versions.append(out.dataset["manifest_sha256"])
    if out.split:
        out.shard = _find_in_shards(root, image_id, (out.manifest or {}).get("sha256"),
                                    out.split)
    current = (out.dataset or {}).get("manifest_sha256")
    for name in list_models(root):
        folder, card = read_model_card(root, name)
        if _image_in_model(root, folder, card, image_id):
            out.models.append(_model_ref(folder, card, "train"))
        elif (out.split and out.split.get("split") == "test" and current
              and card_get(card, "manifest_sha256") == current):
            out.models.append(_model_ref(folder, card, "test"))
        else:
            continue
        mhash = card_get(card, "manifest_sha256")
        if mhash and mhash not in out.dataset_versions:
            out.dataset_versions.append(mhash)
    if not (out.manifest or out.split or out.models):
        raise InputError(f"image {image_id!r} is not in {root.uri(MANIFEST)}, the splits or any "
                         "model's training images; ids look like 'mapillary:123'")
    return out


# --- model lineage -------------------------------------------------------------------------

@dataclass
class ModelLineage:
    name: str
    path: str
    card: dict
    manifest_sha256: str | None
    manifest_current: bool | None       # does the root's manifest still have this hash?
    cell_versions: list[dict]           # [{cell_id, source, version}], sorted
    cells_changed: list[dict]           # cells whose version today differs from the card's
    shards: list[dict]                  # [{name, sha256?, ...}]
    split: Any
    config: Any
    run_ids: Any
    n_train_images: int | None
    sources: dict[str, int]             # images per source among the training images

    def to_dict(self) -> dict:
        return asdict(self)


def _normalise_cell_versions(value: Any) -> list[dict]:
    """Cell versions as rows, from a list of rows or a {"source:cell" | cell: version} map."""
    if not value:
        return []
    if isinstance(value, dict):
        rows = []
        for key, version in value.items():
            source, _, cell = key.rpartition(":")
            rows.append({"cell_id": cell, "source": source or None, "version": version})
    else:
        rows = [dict(r) for r in value]
    return sorted(rows, key=lambda r: (str(r.get("source")), str(r.get("cell_id"))))


def _normalise_shards(value: Any) -> list[dict]:
    if not value:
        return []
    if isinstance(value, dict):
        value = value.get("shards", [])
    return [s if isinstance(s, dict) else {"name": str(s)} for s in value]


def _changed_cells(root: DataRoot, recorded: list[dict]) -> list[dict]:
    if not recorded or not root.exists(CELL_VERSIONS):
        return []
    with root.fs.open(root.path(CELL_VERSIONS), "rb") as f:
        now = pq.ParquetFile(f).read(columns=["cell_id", "source", "version"]).to_pylist()
    by_source = {(r["source"], r["cell_id"]): r["version"] for r in now}
    by_cell = {r["cell_id"]: r["version"] for r in now}
    changed = []
    for row in recorded:
        if row.get("source") is None:
            today = by_cell.get(row.get("cell_id"))
        else:
            today = by_source.get((row.get("source"), row.get("cell_id")))
        if today != row.get("version"):
            changed.append({**row, "version_now": today})
    return changed


def model_lineage(root: DataRoot | str, model: str) -> ModelLineage:
    """What fed a model: manifest hash, per-cell versions (and which changed since),
    shards, split settings, config, Dagster run ids, and its training images by source."""
    root = as_root(root)
    folder, card = read_model_card(root, model)
    mhash = card_get(card, "manifest_sha256")
    current = file_sha256(root, MANIFEST) if mhash else None
    cells = _normalise_cell_versions(card_get(card, "cell_versions"))
    n_train, sources = None, {}
    where = _train_ids_location(root, folder, card)
    if where is not None:
        ids_root, ids_rel = where
        with ids_root.fs.open(ids_root.path(ids_rel), "rb") as f:
            ids = pq.ParquetFile(f).read(columns=["image_id"]).column("image_id").to_pylist()
        n_train = len(ids)
        for image_id in ids:
            src = str(image_id).split(":", 1)[0]
            sources[src] = sources.get(src, 0) + 1
    return ModelLineage(
        name=card.get("run_name") or posixpath.basename(folder), path=folder, card=card,
        manifest_sha256=mhash, manifest_current=(None if current is None else current == mhash),
        cell_versions=cells, cells_changed=_changed_cells(root, cells),
        shards=_normalise_shards(card_get(card, "shards")), split=card_get(card, "split"),
        config=card_get(card, "config"), run_ids=card_get(card, "run_ids"),
        n_train_images=n_train, sources=dict(sorted(sources.items())))


def write_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str)
