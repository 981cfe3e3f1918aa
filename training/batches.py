"""One batch shape for the training code, whatever the loader's collation looks like.

A shard sample's JSON (docs/architecture.md) carries ``labels`` per level, ``lat_deg``,
``lon_deg`` and ``image_id``; the loader may hand them over as a list of dicts, a dict of
lists, or ready tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from geo_assets.errors import InputError


@dataclass
class Batch:
    images: torch.Tensor  # (N, 3, H, W) float
    labels: torch.Tensor  # (N, levels) long
    true_deg: torch.Tensor  # (N, 2) lat/lon float64
    image_ids: list[str]

    def to(self, device: torch.device, channels_last: bool = False) -> Batch:
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        images = self.images.to(device, non_blocking=True, memory_format=fmt)
        return Batch(images, self.labels.to(device, non_blocking=True), self.true_deg,
                     self.image_ids)


def _records(meta) -> list[dict]:
    if isinstance(meta, dict) and "labels" not in meta:
        raise InputError("loader batch metadata has no 'labels'")
    if isinstance(meta, dict):  # dict of lists (default collation)
        n = len(meta["image_id"])
        return [{k: (v[i] if not isinstance(v, dict) else {lk: lv[i] for lk, lv in v.items()})
                 for k, v in meta.items()} for i in range(n)]
    return list(meta)


def from_records(images: torch.Tensor, meta, levels: list[int]) -> Batch:
    """Images plus the samples' JSON records -> Batch."""
    records = _records(meta)
    labels = torch.tensor([[int(r["labels"][str(lv)]) for lv in levels] for r in records],
                          dtype=torch.long)
    true_deg = torch.tensor([[float(r["lat_deg"]), float(r["lon_deg"])] for r in records],
                            dtype=torch.float64)
    return Batch(images, labels, true_deg, [str(r["image_id"]) for r in records])


def to_batch(raw, levels: list[int]) -> Batch:
    """Accepts ``Batch``, ``(images, records)``, or a dict with images and records/labels."""
    if isinstance(raw, Batch):
        return raw
    if isinstance(raw, dict):
        images = next(raw[k] for k in ("images", "image", "jpg") if k in raw)
        if "labels" in raw and torch.is_tensor(raw["labels"]):
            return Batch(images, raw["labels"].long(), raw["true_deg"].double(),
                         list(raw["image_ids"]))
        return from_records(images, raw.get("json", raw.get("meta")), levels)
    if isinstance(raw, (tuple, list)) and len(raw) == 2:
        return from_records(raw[0], raw[1], levels)
    raise InputError(f"cannot read a training batch of type {type(raw).__name__}")
