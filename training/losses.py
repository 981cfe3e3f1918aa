"""Joint loss over hierarchy levels: cross-entropy per level with label smoothing or
haversine label smoothing (PIGEON, Haas et al. 2024); plus the location head's offset loss.

Haversine smoothing puts target mass on every class, decaying with the distance between the
image's true position and the class centroid, relative to the true class:
``q_i ∝ exp(-(d(x, g_i) - d(x, g_true)) / tau)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.geo import pairwise_haversine_km
from training.hierarchy import ClassTables
from training.inference import cell_sizes_deg, offset_targets


def haversine_targets(true_deg: torch.Tensor, labels: torch.Tensor, centroids_deg: torch.Tensor,
                      tau_km: float) -> torch.Tensor:
    """(N, C) soft targets that sum to 1 per row."""
    d = pairwise_haversine_km(true_deg, centroids_deg)  # (N, C) float64
    d_true = d.gather(1, labels[:, None])
    return torch.softmax(-(d - d_true) / tau_km, dim=-1).float()


def auto_tau_km(centroids_deg: torch.Tensor) -> float:
    """Median distance from each class centroid to its nearest other centroid."""
    if len(centroids_deg) < 2:
        return 1000.0
    d = pairwise_haversine_km(centroids_deg, centroids_deg)
    d.fill_diagonal_(float("inf"))
    return max(float(d.min(dim=1).values.median()), 1.0)


class HierarchicalLoss(nn.Module):
    """Weighted sum of per-level losses. ``tau_km``: None (plain smoothing), 'auto' or a float."""

    def __init__(self, tables: ClassTables, label_smoothing: float = 0.0,
                 tau_km: float | str | None = None,
                 level_weights: list[float] | None = None) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing
        self.weights = level_weights or [1.0] * len(tables.levels)
        self.taus: list[float] | None = None
        if tau_km is not None:
            cents = [t.centroid_tensor() for t in tables.levels]
            self.taus = [auto_tau_km(c) if tau_km == "auto" else float(tau_km) for c in cents]
            for k, c in enumerate(cents):
                self.register_buffer(f"centroids_{k}", c.float(), persistent=False)

    def level_loss(self, k: int, logits: torch.Tensor, labels: torch.Tensor,
                   true_deg: torch.Tensor | None) -> torch.Tensor:
        if self.taus is None or true_deg is None:
            return F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
        cents = getattr(self, f"centroids_{k}")
        target = haversine_targets(true_deg.to(cents.device), labels, cents, self.taus[k])
        return torch.sum(-target * torch.log_softmax(logits.float(), dim=-1), dim=-1).mean()

    def forward(self, logits: list[torch.Tensor], labels: torch.Tensor,
                true_deg: torch.Tensor | None = None) -> torch.Tensor:
        """``labels`` (N, levels) class indices; ``true_deg`` (N, 2) lat/lon of the images."""
        return sum(w * self.level_loss(k, x, labels[:, k], true_deg)
                   for k, (w, x) in enumerate(zip(self.weights, logits)))


class OffsetLoss(nn.Module):
    """Smooth-L1 between the location head's offset for the true finest class and the true
    point's offset from that class's centroid, both in cell sizes (OSV-5M's hybrid head)."""

    def __init__(self, tables: ClassTables) -> None:
        super().__init__()
        finest = tables.levels[-1]
        self.register_buffer("centroids", finest.centroid_tensor(), persistent=False)
        self.register_buffer("sizes", cell_sizes_deg(finest.cell_ids), persistent=False)

    def forward(self, offsets: torch.Tensor, labels: torch.Tensor,
                true_deg: torch.Tensor) -> torch.Tensor:
        """``offsets`` (N, C, 2), ``labels`` (N,) finest classes, ``true_deg`` (N, 2)."""
        target = offset_targets(true_deg.to(self.centroids.device), self.centroids[labels],
                                self.sizes[labels])
        picked = offsets[torch.arange(len(labels), device=offsets.device), labels]
        return F.smooth_l1_loss(picked.float(), target.float().to(picked.device), beta=0.1)
