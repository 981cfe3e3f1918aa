"""Evaluation metrics. State is sums and counts, so results are exact under DDP and do not
depend on batch size (OSV-5M's convention); ratios are formed only in ``compute()``.

Conventions (../shared/data/README.md): haversine with R = 6371 km; accuracy at d < 1, 25,
200, 750, 2500 km (strictly less); GeoGuessr score 5000 * exp(-d / 1492.7), averaged.
"""

from __future__ import annotations

import torch

from training.distributed import all_reduce_sum, gather_objects
from training.geo import geoguessr_score, haversine_km

RADII_KM = (1.0, 25.0, 200.0, 750.0, 2500.0)


def accuracy_within(distance_km: torch.Tensor, radius_km: float) -> float:
    """Share of distances strictly below the radius."""
    return float((distance_km < radius_km).double().mean())


def top_k_correct(probs: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean per row: the label is among the k most probable classes."""
    k = min(k, probs.shape[-1])
    return (probs.topk(k, dim=-1).indices == labels[:, None]).any(dim=-1)


def calibration_bins(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> torch.Tensor:
    """(n_bins, 3): count, summed confidence, summed correctness per confidence bin (lo, hi]."""
    conf, pred = probs.max(dim=-1)
    correct = (pred == labels).double()
    index = (conf.double() * n_bins).ceil().long().clamp(1, n_bins) - 1
    out = torch.zeros(n_bins, 3, dtype=torch.float64)
    out[:, 0].index_add_(0, index, torch.ones_like(correct))
    out[:, 1].index_add_(0, index, conf.double())
    out[:, 2].index_add_(0, index, correct)
    return out


def expected_calibration_error(bins: torch.Tensor) -> float:
    """sum_b n_b/N * |accuracy_b - confidence_b| from ``calibration_bins`` sums."""
    n = bins[:, 0].sum()
    if n == 0:
        return float("nan")
    return float((bins[:, 2] - bins[:, 1]).abs().sum() / n)


def per_class_scores(confusion: torch.Tensor) -> dict[str, list[float]]:
    """Precision, recall, F1 and support per class from a (true, predicted) confusion matrix."""
    conf = confusion.double()
    tp = conf.diag()
    predicted = conf.sum(dim=0)
    support = conf.sum(dim=1)
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(support > 0, tp / support.clamp(min=1), torch.zeros_like(tp))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-12),
                     torch.zeros_like(tp))
    return {"precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
            "support": support.long().tolist()}


class LevelMetrics:
    """Top-1/top-5, NLL, calibration bins and (optionally) a confusion matrix for one level."""

    def __init__(self, num_classes: int, confusion: bool, n_bins: int = 15) -> None:
        self.num_classes = num_classes
        self.sums = torch.zeros(4, dtype=torch.float64)  # n, top1, top5, nll
        self.bins = torch.zeros(n_bins, 3, dtype=torch.float64)
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.long) if confusion \
            else None

    def update(self, log_probs: torch.Tensor, labels: torch.Tensor) -> None:
        log_probs, labels = log_probs.detach().double().cpu(), labels.cpu()
        probs = log_probs.exp()
        nll = -log_probs.gather(1, labels[:, None]).sum()
        self.sums += torch.stack([torch.tensor(float(len(labels)), dtype=torch.float64),
                                  top_k_correct(probs, labels, 1).double().sum(),
                                  top_k_correct(probs, labels, 5).double().sum(), nll])
        self.bins += calibration_bins(probs, labels, self.bins.shape[0])
        if self.confusion is not None:
            flat = labels * self.num_classes + probs.argmax(dim=-1)
            self.confusion += torch.bincount(flat, minlength=self.num_classes ** 2).view(
                self.num_classes, self.num_classes)

    def sync(self) -> None:
        self.sums = all_reduce_sum(self.sums)
        self.bins = all_reduce_sum(self.bins)
        if self.confusion is not None:
            self.confusion = all_reduce_sum(self.confusion)

    def compute(self) -> dict:
        n = max(float(self.sums[0]), 1.0)
        return {"n": int(self.sums[0]), "top1": float(self.sums[1]) / n,
                "top5": float(self.sums[2]) / n, "nll": float(self.sums[3]) / n,
                "ece": expected_calibration_error(self.bins)}


class DistanceMetrics:
    """Haversine error ladder between predicted and true positions."""

    def __init__(self, radii_km: tuple[float, ...] = RADII_KM) -> None:
        self.radii = radii_km
        self.distances: list[torch.Tensor] = []

    def update(self, pred_deg: torch.Tensor, true_deg: torch.Tensor) -> torch.Tensor:
        d = haversine_km(pred_deg[:, 0], pred_deg[:, 1], true_deg[:, 0], true_deg[:, 1]).cpu()
        self.distances.append(d)
        return d

    def sync(self) -> None:
        local = torch.cat(self.distances) if self.distances else torch.zeros(0, dtype=torch.float64)
        self.distances = [torch.cat(gather_objects(local))]

    def compute(self) -> dict:
        d = torch.cat(self.distances) if self.distances else torch.zeros(0, dtype=torch.float64)
        if len(d) == 0:
            return {"n": 0}
        out = {"n": len(d), "median_km": float(d.quantile(0.5)), "mean_km": float(d.mean()),
               "geoguessr": float(geoguessr_score(d).mean())}
        for r in self.radii:
            out[f"acc_{r:g}km"] = accuracy_within(d, r)
        return out
