"""Lineage: which datasets, splits, shards and models an image fed, and what fed a model.

Plain functions over the files in the data root (paths in ``geo_assets.layout``); no Dagster
import, so the CLI and tests can answer lineage questions without an instance. Sources:

- the merged image manifest: the image's row (source, cell, kept / drop reason);
- the cell versions table: the version (sha256) of each per-cell manifest file;
- the dataset descriptor, splits and shard index (or contents table) under ``datasets/``:
  the current dataset version, the image's split and fold, and the shard that holds it;
- every model folder's card and training image ids: every model and the exact images it
  trained on.

Model cards are read with the key names of ``geo_assets.model_card`` only.
"""

from __future__ import annotations

import json
import posixpath
import tarfile
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow.compute as pc

from geo_assets import layout
from geo_assets import model_card as mc
from geo_assets.errors import DataUnavailableError, InputError
from geo_assets.shards import KEY_HEX_DIGITS
from geo_assets.storage import DataRoot

# Parquet files are opened with DataRoot.parquet_file (a local file by Arrow itself) and read
# on this thread: with Arrow's reader threads on an fsspec file and polars loaded
# (geo_assets.shards), the process aborted at exit about one run in two ("terminate called
# without an active exception", status 134). tests/cli/test_cli_end_to_end.py runs the
# command 10 times.
READ_THREADS = False

_ROW_FIELDS = ("source", "source_id", "group_id", "cell_id", "sha256", "kept", "drop_reason",
               "license", "attribution", "lat_deg", "lon_deg")
_DESCRIPTOR_MANIFEST = "manifest_hash"  # the manifest's sha256 in the dataset descriptor


def as_root(root: DataRoot | str) -> DataRoot:
    return root if isinstance(root, DataRoot) else DataRoot(str(root))


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
    """Rows of a Parquet file where ``column == value``, read in batches on this thread
    (``pq.read_table(filters=...)`` goes through pyarrow.dataset's thread pools)."""
    if not root.exists(relpath):
        return []
    with root.parquet_file(relpath) as parquet:
        names = parquet.schema_arrow.names
        if column not in names:
            raise InputError(f"{root.uri(relpath)} has no column {column!r}; it was written by "
                             "an incompatible version, re-materialize it")
        wanted = [c for c in (columns or names) if c in names]
        rows: list[dict] = []
        for batch in parquet.iter_batches(columns=wanted, use_threads=READ_THREADS):
            rows += batch.filter(pc.equal(batch.column(column), value)).to_pylist()
    return rows


# --- models ----------------------------------------------------------------------------------

@dataclass
class ModelRef:
    """A model and how an image (or a dataset) relates to it."""

    name: str
    path: str
    manifest_sha256: str | None = None
    created_at: str | None = None
    role: str | None = None          # "train" (trained on it) or "test" (evaluated on it)
    dagster_run_id: str | None = None


def list_models(root: DataRoot | str) -> list[str]:
    """Names of the models under the models folder that have a model card, sorted."""
    root = as_root(root)
    cards = root.glob(f"{layout.MODELS_DIR}/*/{layout.MODEL_CARD_FILE}")
    return sorted(posixpath.basename(posixpath.dirname(c)) for c in cards)


def read_model_card(root: DataRoot | str, model: str) -> tuple[str, dict]:
    """Find a model by run name, ``models/<name>``, or a path/URL of its folder or card.

    Returns (the model's folder relative to the root or as given, the card)."""
    root = as_root(root)
    name = model.rstrip("/")
    if name.endswith(layout.MODEL_CARD_FILE):
        name = posixpath.dirname(name)
    rel = layout.model_dir(name) if "/" not in name else name
    card = _read_json(root, f"{rel}/{layout.MODEL_CARD_FILE}")
    if card is not None:
        return rel, card
    card = _read_json(DataRoot(name), layout.MODEL_CARD_FILE)  # a folder outside the root
    if card is not None:
        return name, card
    known = ", ".join(list_models(root)) or "none"
    raise InputError(f"model {model!r}: no {layout.MODEL_CARD_FILE} under "
                     f"{root.uri(layout.MODELS_DIR)}/{name} or {name}; "
                     f"models with a card: {known}")


def _train_ids_location(root: DataRoot, folder: str, card: dict) -> tuple[DataRoot, str] | None:
    """Where the model's training image ids are: next to its card, in the root or (for a
    model folder outside the root) in that folder."""
    name = card.get(mc.TRAIN_IMAGE_IDS) or layout.TRAIN_IDS_FILE
    if root.exists(f"{folder}/{name}"):
        return root, f"{folder}/{name}"
    outside = DataRoot(folder)
    return (outside, name) if outside.exists(name) else None


def _model_ref(folder: str, card: dict, role: str | None = None) -> ModelRef:
    return ModelRef(name=card.get(mc.RUN_NAME) or posixpath.basename(folder), path=folder,
                    manifest_sha256=card.get(mc.MANIFEST_SHA256),
                    created_at=card.get(mc.CREATED_AT), role=role,
                    dagster_run_id=card.get(mc.DAGSTER_RUN_ID))


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


def _tar_has_key(root: DataRoot, relpath: str, key: str) -> bool:
    """Whether a shard tar holds a sample ``key``, reading its headers only."""
    with root.fs.open(root.path(relpath), "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
        return any(member.name.split(".", 1)[0] == key for member in tar)


def _find_in_shards(root: DataRoot, image_id: str, sha256: str | None,
                    split: dict) -> str | None:
    """Name of the shard that holds the image.

    The shards' contents table (one row per sample) answers directly; without it, the tar
    headers of the shards of the image's own split and fold are read (the sample key is the
    start of the sha256), skipping the image bytes."""
    contents = layout.in_datasets(layout.SHARD_CONTENTS)
    if root.exists(contents):
        rows = _filter_rows(root, contents, "image_id", image_id, ["image_id", "shard"])
        return rows[0]["shard"] if rows else None
    index = _read_json(root, layout.in_datasets(layout.SHARD_INDEX))
    if not index or not sha256:
        return None
    test = split.get("split") == "test"
    for shard in index.get("shards", []):
        if shard.get("split") != split.get("split"):
            continue
        if not (test or str(shard.get("fold")) == str(split.get("fold"))):
            continue
        rel = layout.in_datasets(f"{layout.SHARDS_DIR}/{layout.shard_file(shard['name'])}")
        if root.exists(rel) and _tar_has_key(root, rel, sha256[:KEY_HEX_DIGITS]):
            return shard["name"]
    return None


def _image_in_model(root: DataRoot, folder: str, card: dict, image_id: str) -> bool:
    where = _train_ids_location(root, folder, card)
    return bool(where and _filter_rows(*where, "image_id", image_id, ["image_id"]))


def _add_manifest(root: DataRoot, out: ImageLineage) -> None:
    """The image's manifest row and its cell's version."""
    rows = _filter_rows(root, layout.IMAGE_MANIFEST, "image_id", out.image_id)
    if not rows:
        return
    out.manifest = {k: rows[0].get(k) for k in _ROW_FIELDS if k in rows[0]}
    cell, source = rows[0].get("cell_id"), rows[0].get("source")
    versions = [r for r in _filter_rows(root, layout.CELL_VERSIONS, "cell_id", cell)
                if r.get("source") == source]
    out.cell_version = versions[0] if versions else None


def _add_dataset(root: DataRoot, out: ImageLineage) -> None:
    """The current dataset version, and the image's split and shard in it."""
    descriptor = _read_json(root, layout.in_datasets(layout.DESCRIPTOR))
    if descriptor is not None:
        out.dataset = {"manifest_sha256": descriptor.get(_DESCRIPTOR_MANIFEST),
                       "created_at": descriptor.get("created_at"),
                       "levels": descriptor.get("levels")}
    splits = _filter_rows(root, layout.in_datasets(layout.SPLITS), "image_id", out.image_id)
    if not splits:
        return
    out.split = {k: splits[0].get(k) for k in ("split", "fold", "group_id")}
    if out.dataset and out.dataset.get("manifest_sha256"):
        out.dataset_versions.append(out.dataset["manifest_sha256"])
    out.shard = _find_in_shards(root, out.image_id, (out.manifest or {}).get("sha256"),
                                out.split)


def _add_models(root: DataRoot, out: ImageLineage) -> None:
    """Models that trained on the image, or were evaluated on it (a test image of the
    dataset version they were trained from)."""
    current = (out.dataset or {}).get("manifest_sha256")
    is_test = bool(out.split and out.split.get("split") == "test")
    for name in list_models(root):
        folder, card = read_model_card(root, name)
        mhash = card.get(mc.MANIFEST_SHA256)
        if _image_in_model(root, folder, card, out.image_id):
            out.models.append(_model_ref(folder, card, "train"))
        elif is_test and current and mhash == current:
            out.models.append(_model_ref(folder, card, "test"))
        else:
            continue
        if mhash and mhash not in out.dataset_versions:
            out.dataset_versions.append(mhash)


def image_lineage(root: DataRoot | str, image_id: str) -> ImageLineage:
    """Everything geoscout knows about where an image went: its manifest row and cell
    version, the current dataset version, its split and shard, and every model that trained
    on it (from the models' training image ids) or was evaluated on it."""
    root = as_root(root)
    if not root.exists(layout.IMAGE_MANIFEST) and not list_models(root):
        raise DataUnavailableError(
            f"no manifest ({root.uri(layout.IMAGE_MANIFEST)}) and no models under "
            f"{root.uri(layout.MODELS_DIR)}: materialize image_manifest first, or point "
            "--data-root at the right root")
    out = ImageLineage(image_id=image_id)
    _add_manifest(root, out)
    _add_dataset(root, out)
    _add_models(root, out)
    if not (out.manifest or out.split or out.models):
        raise InputError(f"image {image_id!r} is not in {root.uri(layout.IMAGE_MANIFEST)}, "
                         "the splits or any model's training images; ids look like "
                         "'mapillary:123'")
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
    shards: list[dict]                  # [{name, split, fold, count, sha256}]
    split: Any
    config: Any
    dagster_run_id: str | None
    n_train_images: int | None
    sources: dict[str, int]             # images per source among the training images

    def to_dict(self) -> dict:
        return asdict(self)


def _changed_cells(root: DataRoot, recorded: list[dict]) -> list[dict]:
    if not recorded or not root.exists(layout.CELL_VERSIONS):
        return []
    with root.parquet_file(layout.CELL_VERSIONS) as parquet:
        now = parquet.read(columns=["cell_id", "source", "version"],
                           use_threads=READ_THREADS).to_pylist()
    today = {(r["source"], r["cell_id"]): r["version"] for r in now}
    changed = []
    for row in recorded:
        version_now = today.get((row.get("source"), row.get("cell_id")))
        if version_now != row.get("version"):
            changed.append({**row, "version_now": version_now})
    return changed


def _train_sources(root: DataRoot, folder: str, card: dict) -> tuple[int | None, dict]:
    """The number of training images and their count per source (None, {} when the model
    has no training image ids)."""
    where = _train_ids_location(root, folder, card)
    if where is None:
        return None, {}
    ids_root, ids_rel = where
    with ids_root.parquet_file(ids_rel) as parquet:
        ids = parquet.read(columns=["image_id"], use_threads=READ_THREADS
                           ).column("image_id").to_pylist()
    sources: dict[str, int] = {}
    for image_id in ids:
        src = str(image_id).split(":", 1)[0]
        sources[src] = sources.get(src, 0) + 1
    return len(ids), dict(sorted(sources.items()))


def model_lineage(root: DataRoot | str, model: str) -> ModelLineage:
    """What fed a model: manifest hash, per-cell versions (and which changed since),
    shards, split settings, config, the Dagster run, and its training images by source."""
    root = as_root(root)
    folder, card = read_model_card(root, model)
    mhash = card.get(mc.MANIFEST_SHA256)
    current = (root.sha256(layout.IMAGE_MANIFEST)
               if mhash and root.exists(layout.IMAGE_MANIFEST) else None)
    cells = sorted(card.get(mc.CELL_VERSIONS) or [],
                   key=lambda r: (str(r.get("source")), str(r.get("cell_id"))))
    n_train, sources = _train_sources(root, folder, card)
    return ModelLineage(
        name=card.get(mc.RUN_NAME) or posixpath.basename(folder), path=folder, card=card,
        manifest_sha256=mhash, manifest_current=(None if current is None else current == mhash),
        cell_versions=cells, cells_changed=_changed_cells(root, cells),
        shards=list(card.get(mc.SHARDS) or []), split=card.get(mc.SPLIT),
        config=card.get(mc.CONFIG), dagster_run_id=card.get(mc.DAGSTER_RUN_ID),
        n_train_images=n_train, sources=sources)
