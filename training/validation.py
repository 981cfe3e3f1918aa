"""What training decides on the validation fold after the epochs: the per-level temperatures
(``training.calibration.calibrate_levels``) and the location estimator that ``model.pt``
records for the report and ``predict`` (the method of ``estimate_locations`` with the lowest
validation median error; ties go to the simpler method, listed first). The ``density``
estimator's radius is chosen here too, among ``DENSITY_RADII`` times the top-1 centroid's
validation median: maximising the probability mass within a radius just below that median is
what lowers the median."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace

import torch
from torch import nn

from training.batches import to_batch
from training.calibration import calibrate_levels
from training.distributed import gather_objects
from training.geo import haversine_km
from training.hierarchy import ClassTables
from training.inference import (
    LOCATION_METHODS,
    RetrievalIndex,
    estimate_locations,
    finest_probs,
    level_log_probs,
)
from training.metrics import LevelMetrics

# Density radius candidates, times the centroid's validation median: an even grid from a
# quarter to the whole median, fixed without looking at any split's figures.
DENSITY_RADII = (0.25, 0.5, 0.75, 1.0)


@dataclass
class ValOutputs:
    """Every validation image's logits per level, labels (N, levels), true lat/lon (N, 2),
    location-head offsets (N, C_finest, 2) or None, and pooled embeddings (N, D)."""

    logits: list[torch.Tensor]
    labels: torch.Tensor
    true_deg: torch.Tensor
    offsets: torch.Tensor | None
    embeddings: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)


def collect(model: nn.Module, loader, tables: ClassTables, device: torch.device,
            amp_ctx=contextlib.nullcontext) -> ValOutputs:
    """This rank's validation outputs (on the CPU)."""
    model.eval()
    logits, labels, true_deg, offsets, embeddings = [[] for _ in tables.levels], [], [], [], []
    with torch.inference_mode():
        for raw in loader:
            batch = to_batch(raw, tables.level_ids).to(device)
            with amp_ctx():
                level_logits, off, pooled = model.outputs(batch.images)
            for k, x in enumerate(level_logits):
                logits[k].append(x.float().cpu())
            if off is not None:
                offsets.append(off.float().cpu())
            embeddings.append(pooled.float().cpu())
            labels.append(batch.labels.cpu())
            true_deg.append(batch.true_deg.cpu())
    if not labels:
        return ValOutputs([torch.zeros(0, c) for c in tables.num_classes],
                          torch.zeros(0, len(tables.levels), dtype=torch.long),
                          torch.zeros(0, 2, dtype=torch.float64), None, None)
    return ValOutputs([torch.cat(x) for x in logits], torch.cat(labels), torch.cat(true_deg),
                      torch.cat(offsets) if offsets else None, torch.cat(embeddings))


def gather(outputs: ValOutputs) -> ValOutputs:
    """Every rank's outputs concatenated (collective; a no-op on one process)."""
    parts = gather_objects(outputs)
    offsets = [p.offsets for p in parts if p.offsets is not None and len(p)]
    embeddings = [p.embeddings for p in parts if p.embeddings is not None and len(p)]
    return ValOutputs([torch.cat([p.logits[k] for p in parts]) for k in range(len(
        outputs.logits))], torch.cat([p.labels for p in parts]),
        torch.cat([p.true_deg for p in parts]), torch.cat(offsets) if offsets else None,
        torch.cat(embeddings) if embeddings else None)


def build_index(outputs: ValOutputs, max_images: int) -> tuple[RetrievalIndex | None, str]:
    """The retrieval index of (gathered) training-image outputs, or None and why not."""
    n = len(outputs)
    if outputs.embeddings is None or n == 0:
        return None, "no training images"
    if n > max_images:
        return None, f"{n} training images, more than --retrieval-max-images {max_images}"
    emb = torch.nn.functional.normalize(outputs.embeddings.float(), dim=-1)
    return RetrievalIndex(emb, outputs.true_deg.float(), outputs.labels[:, -1]), \
        f"{n} training images"


def location_errors_km(outputs: ValOutputs, tables: ClassTables, temperatures: list[float],
                       method: str, index: RetrievalIndex | None = None) -> torch.Tensor:
    probs = finest_probs(outputs.logits, tables, temperatures)
    pred = estimate_locations(probs, tables.levels[-1], method, offsets=outputs.offsets,
                              embeddings=outputs.embeddings, index=index)
    truth = outputs.true_deg.to(torch.float64)
    return haversine_km(pred[:, 0], pred[:, 1], truth[:, 0], truth[:, 1])


def available_methods(outputs: ValOutputs, index: RetrievalIndex | None) -> list[str]:
    usable = {"regression": outputs.offsets is not None,
              "retrieval": index is not None and outputs.embeddings is not None,
              "density": index is not None}
    return [m for m in LOCATION_METHODS if usable.get(m, True)]


def density_radius(outputs: ValOutputs, tables: ClassTables, temperatures: list[float],
                   index: RetrievalIndex, centroid_km: float) -> tuple[float, float]:
    """(radius km, validation median km) of the best ``density`` radius in ``DENSITY_RADII``."""
    tried = {}
    for factor in DENSITY_RADII:
        radius = round(max(factor * centroid_km, 1.0), 3)
        errors = location_errors_km(outputs, tables, temperatures, "density",
                                    replace(index, radius_km=radius))
        tried[radius] = round(float(errors.median()), 3)
    best = min(tried, key=lambda r: tried[r])
    return best, tried[best]


def choose_location_method(outputs: ValOutputs, tables: ClassTables,
                           temperatures: list[float], index: RetrievalIndex | None = None) -> dict:
    """``{"method", "validation_median_km": {method: km}, "n"}`` (plus ``density_radius_km``
    with an index); ``centroid`` without data."""
    methods = available_methods(outputs, index)
    if len(outputs) == 0:
        return {"method": "centroid", "validation_median_km": {}, "n": 0}
    medians = {m: round(float(location_errors_km(outputs, tables, temperatures, m, index)
                              .median()), 3) for m in methods if m != "density"}
    extra = {}
    if "density" in methods:
        radius, medians["density"] = density_radius(outputs, tables, temperatures, index,
                                                    medians["centroid"])
        extra["density_radius_km"] = radius
    best = min(methods, key=lambda m: medians[m])  # min keeps the first of equal ones
    return {"method": best, "validation_median_km": medians, "n": len(outputs), **extra}


def level_metrics(outputs: ValOutputs, tables: ClassTables) -> list[dict]:
    """Per-level top-1/top-5/NLL/ECE of already gathered outputs (no temperature)."""
    metrics = [LevelMetrics(c, confusion=False) for c in tables.num_classes]
    for k, (m, lp) in enumerate(zip(metrics, level_log_probs(outputs.logits))):
        m.update(lp, outputs.labels[:, k])
    return [m.compute() for m in metrics]


def decide(model: nn.Module, loader, tables: ClassTables, device: torch.device, amp_ctx,
           calibration_min_samples: int | None,
           index: RetrievalIndex | None = None) -> tuple[list[float], list[dict], dict]:
    """Validation outputs from every rank -> (temperatures, per-level metrics, decisions:
    ``calibration`` per level and ``location``). ``None``: calibration switched off."""
    outputs = gather(collect(model, loader, tables, device, amp_ctx))
    metrics = level_metrics(outputs, tables)
    if calibration_min_samples is not None:
        temperatures, report = calibrate_levels(outputs.logits, outputs.labels,
                                                calibration_min_samples)
    else:
        temperatures = [1.0] * len(tables.levels)
        report = [{"temperature": 1.0, "fitted": False, "reason": "calibration switched off "
                   "(--no-calibrate)"} for _ in temperatures]
    location = choose_location_method(outputs, tables, temperatures, index)
    return temperatures, metrics, {"calibration": report, "location": location}
