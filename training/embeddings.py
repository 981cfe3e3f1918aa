"""The frozen-encoder mode's embedding cache: every image of a dataset encoded once.

The frozen (pretrained, eval-mode) backbone encodes every image of the dataset's train folds
(the validation fold among them) and of its test split, through the evaluation transform
(resize, centre crop, the backbone's normalisation; no augmentation), into pooled features.
They are stored as float16 with the image ids, the labels per level and the true lat/lon, per
part (``train/<fold>``, ``test``), so any choice of validation fold re-uses the same file.

Where: ``datasets/embeddings/<backbone>-<key>.pt`` beside the dataset (``layout.
embedding_cache``), because the embeddings belong to the dataset and the backbone, not to one
run: every run, head type or hyper-parameter trial on the same dataset and backbone re-uses
them. A dataset on object storage, or a dataset folder this process may not write, keeps its
cache in the run folder instead (used by that run only; the reason is logged).

The key (``cache_key``) covers what changes the embeddings: the dataset's descriptor and every
shard's name, split, fold, count and SHA-256 (from the shard index, else hashed here), the
backbone's name and a digest of its weights and buffers (so another weights file or release is
another cache), the input size, the evaluation crop ratio and the normalisation. A file under
the key's name that cannot be read, is not a cache, holds another key or is inconsistent is
rebuilt, with the reason logged; it never fails deep inside training.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import posixpath
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from geo_assets import layout
from geo_assets.progress import progress
from geo_assets.storage import DataRoot, is_url, sha256_file, sha256_stream
from training import data
from training.batches import to_batch
from training.checkpoint import atomic_save

log = logging.getLogger("geoscout.training")

CACHE_FORMAT = "geoscout-embeddings/1"


@dataclass
class EmbeddingPart:
    """One part's images: ids, pooled features (N, D) float16, labels (N, levels) int64 in
    the descriptor's level order, true lat/lon (N, 2) float64."""

    image_ids: list[str]
    embeddings: torch.Tensor
    labels: torch.Tensor
    true_deg: torch.Tensor

    def __len__(self) -> int:
        return len(self.image_ids)

    def to_dict(self) -> dict:
        return {"image_ids": self.image_ids, "embeddings": self.embeddings,
                "labels": self.labels, "true_deg": self.true_deg}

    @classmethod
    def join(cls, parts: list[EmbeddingPart]) -> EmbeddingPart:
        return cls([i for p in parts for i in p.image_ids],
                   torch.cat([p.embeddings for p in parts]), torch.cat([p.labels for p in parts]),
                   torch.cat([p.true_deg for p in parts]))


@dataclass
class EmbeddingCache:
    path: Path
    key: str
    parts: dict[str, EmbeddingPart]
    built: bool  # encoded by this process (False: read from the file)
    seconds: float  # encoding, or reading, time
    reason: str  # why it was built or re-used

    def select(self, split: str, folds: list[int] | None = None) -> EmbeddingPart:
        """The cached images of ``split`` (train: of ``folds``), as one part."""
        if split == "test":
            return self.parts["test"]
        names = [n for n in self.parts if n.startswith("train/")
                 and (folds is None or int(n.split("/")[1]) in folds)]
        return EmbeddingPart.join([self.parts[n] for n in sorted(names)])

    def summary(self) -> dict:
        """What the model card records."""
        return {"path": str(self.path), "key": self.key, "built": self.built,
                "seconds": round(self.seconds, 2), "reason": self.reason,
                "images": {name: len(p) for name, p in self.parts.items()}}


# --- the key -------------------------------------------------------------------------------------

def _file_sha256(location: str) -> str:
    if is_url(location):
        import fsspec

        with fsspec.open(location, "rb") as fh:
            return sha256_stream(fh)
    return sha256_file(location)


def dataset_digest(info: data.DatasetDescriptor) -> str:
    """The descriptor and every shard's identity (index SHA-256, else the file's)."""
    folder = DataRoot(posixpath.dirname(str(info.path).rstrip("/")) or ".")
    index = json.loads(folder.read_bytes(info.raw.get("shard_index", layout.SHARD_INDEX)))
    hashes = {e["name"]: e.get("sha256") or "" for e in index.get("shards", [])}
    shards = [[s.name, s.split, s.fold, s.count, hashes.get(s.name) or _file_sha256(s.url)]
              for s in sorted(info.shards, key=lambda s: s.name)]
    blob = json.dumps({"descriptor": info.raw, "shards": shards}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def weights_digest(module: nn.Module) -> str:
    """SHA-256 over the module's parameters and buffers (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def cache_key(info: data.DatasetDescriptor, backbone_name: str, backbone: nn.Module,
              image_size: int, norm: tuple[tuple[float, ...], tuple[float, ...]],
              ) -> tuple[str, dict]:
    """(16 hex digits, the parts they hash)."""
    parts = {"format": CACHE_FORMAT, "dataset": dataset_digest(info),
             "backbone": backbone_name, "weights": weights_digest(backbone),
             "image_size": int(image_size), "eval_crop_ratio": data.EVAL_CROP_RATIO,
             "mean": [float(x) for x in norm[0]], "std": [float(x) for x in norm[1]],
             "levels": list(info.levels)}
    blob = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16], parts


def cache_path(info: data.DatasetDescriptor, backbone_name: str, key: str,
               run_folder: Path) -> tuple[Path, str | None]:
    """(where the cache lives, why not beside the dataset or None); see the module doc."""
    relpath = layout.embedding_cache(backbone_name, key)
    if is_url(info.path):
        return run_folder / relpath, "the dataset is on object storage"
    datasets = Path(info.path).parent
    target = datasets / relpath
    folder = target.parent if target.parent.exists() else datasets
    if not os.access(folder, os.W_OK):
        return run_folder / relpath, f"{folder} is not writable"
    return target, None


# --- reading -------------------------------------------------------------------------------------

def _check_part(name: str, raw, levels: int) -> EmbeddingPart:
    part = EmbeddingPart(list(raw["image_ids"]), raw["embeddings"], raw["labels"],
                         raw["true_deg"])
    n = len(part.image_ids)
    ok = (part.embeddings.ndim == 2 and part.embeddings.shape[0] == n
          and tuple(part.labels.shape) == (n, levels) and tuple(part.true_deg.shape) == (n, 2))
    if not ok:
        raise ValueError(f"part {name!r} has inconsistent shapes")
    return part


def read_cache(path: Path, key: str, levels: int, key_parts: dict | None = None,
               ) -> tuple[dict[str, EmbeddingPart] | None, str]:
    """(the parts, "") when ``path`` is this key's cache; else (None, why it is not)."""
    if not path.is_file():
        return None, "no cache yet"
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated, garbage, or refused by torch
        return None, f"{path} is unreadable ({type(exc).__name__}: {exc})"
    if not isinstance(saved, dict) or saved.get("format") != CACHE_FORMAT:
        return None, f"{path} is not an embedding cache ({CACHE_FORMAT})"
    if saved.get("key") != key:
        theirs = saved.get("key_parts") if isinstance(saved.get("key_parts"), dict) else {}
        differ = sorted(k for k in (key_parts or {}) if theirs.get(k) != key_parts[k])
        return None, (f"{path} holds key {saved.get('key')!r}, not {key!r}"
                      + (f" (differs in {', '.join(differ)})" if differ else ""))
    try:
        parts = {name: _check_part(name, raw, levels) for name, raw in saved["parts"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return None, f"{path} is damaged ({exc})"
    return parts, ""


# --- encoding ------------------------------------------------------------------------------------

def encode(model: nn.Module, loader, levels: list[int], device: torch.device, amp_ctx,
           bar) -> EmbeddingPart:
    """Pooled backbone features of every image the (evaluation) loader yields."""
    ids, embeddings, labels, true_deg = [], [], [], []
    with torch.inference_mode():
        for raw in loader:
            batch = to_batch(raw, levels)
            with amp_ctx():
                pooled = model.features(batch.images.to(device))
            embeddings.append(pooled.float().cpu().half())
            labels.append(batch.labels)
            true_deg.append(batch.true_deg)
            ids += batch.image_ids
            bar.update(len(batch.image_ids))
    if not ids:
        return EmbeddingPart([], torch.zeros(0, model.backbone.out_features,
                                             dtype=torch.float16),
                             torch.zeros(0, len(levels), dtype=torch.long),
                             torch.zeros(0, 2, dtype=torch.float64))
    return EmbeddingPart(ids, torch.cat(embeddings), torch.cat(labels), torch.cat(true_deg))


def part_loaders(info: data.DatasetDescriptor, image_size: int, batch_size: int, workers: int,
                 norm) -> dict[str, object]:
    """Evaluation loaders (each image once, no augmentation): one per train fold, and test."""
    def loader(split: str, folds: list[int] | None):
        return data.make_loader(info, split=split, folds=folds, image_size=image_size,
                                batch_size=batch_size, num_workers=workers, train=False,
                                mean=norm[0], std=norm[1])

    loaders = {f"train/{f}": loader("train", [f]) for f in info.folds()}
    if info.select("test"):
        loaders["test"] = loader("test", None)
    return loaders


def build(model: nn.Module, info: data.DatasetDescriptor, image_size: int, batch_size: int,
          workers: int, device: torch.device, amp_ctx) -> dict[str, EmbeddingPart]:
    """Encode every part (the model in eval mode; its training mode is restored)."""
    from training.models import normalisation

    was_training = model.training
    model.eval()
    norm = normalisation(model.backbone)
    bar = progress(sum(s.count for s in info.shards), desc="encoding (frozen backbone)",
                   unit="img")
    try:
        return {name: encode(model, loader, list(info.levels), device, amp_ctx, bar)
                for name, loader in part_loaders(info, image_size, batch_size, workers,
                                                 norm).items()}
    finally:
        bar.close()
        model.train(was_training)


def load_or_build(model: nn.Module, backbone_name: str, info: data.DatasetDescriptor, *,
                  image_size: int, batch_size: int, workers: int, device: torch.device,
                  run_folder: Path, amp_ctx=contextlib.nullcontext) -> EmbeddingCache:
    """The cache for this dataset, backbone and input: read when its key matches, else
    encoded and written atomically."""
    from training.models import normalisation

    started = time.perf_counter()
    key, key_parts = cache_key(info, backbone_name, model.backbone, image_size,
                               normalisation(model.backbone))
    path, elsewhere = cache_path(info, backbone_name, key, run_folder)
    if elsewhere:
        log.info("embedding cache in the run folder: %s", elsewhere)
    parts, why = read_cache(path, key, len(info.levels), key_parts)
    if parts is not None:
        log.info("embedding cache %s re-used (key %s)", path, key)
        return EmbeddingCache(path, key, parts, False, time.perf_counter() - started,
                              "key matched")
    if why != "no cache yet":
        log.warning("embedding cache rebuilt: %s", why)
    parts = build(model, info, image_size, batch_size, workers, device, amp_ctx)
    atomic_save({"format": CACHE_FORMAT, "key": key, "key_parts": key_parts,
                 "parts": {name: p.to_dict() for name, p in parts.items()}}, path)
    seconds = time.perf_counter() - started
    log.info("embedding cache %s written: %d images in %.1f s", path,
             sum(len(p) for p in parts.values()), seconds)
    return EmbeddingCache(path, key, parts, True, seconds, why)
