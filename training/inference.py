"""From per-level logits to cells and a location.

Hierarchical combination: the probability of a class at level k is the product of the
per-level probabilities along its path from the coarsest level (itself, its parent, its
grandparent, ...), renormalised over level k. This is done in log space with probabilities,
never with logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from training.geo import spherical_mean_deg
from training.hierarchy import ClassTables


def level_log_probs(logits: list[torch.Tensor],
                    temperatures: list[float] | None = None) -> list[torch.Tensor]:
    """Per-level log-softmax, after dividing by each level's temperature."""
    temps = temperatures or [1.0] * len(logits)
    return [torch.log_softmax(x.float() / t, dim=-1) for x, t in zip(logits, temps)]


def hierarchical_log_probs(log_probs: list[torch.Tensor],
                           tables: ClassTables) -> list[torch.Tensor]:
    """log p_hier_k(c) = normalise( sum_j log p_j(ancestor_j(c)) ) for every level k."""
    out = []
    for k in range(len(log_probs)):
        anc = tables.ancestors(k).to(log_probs[k].device)  # (C_k, k+1)
        joint = sum(log_probs[j][:, anc[:, j]] for j in range(k + 1))
        out.append(joint - torch.logsumexp(joint, dim=-1, keepdim=True))
    return out


def adaptive_top_k(probs: torch.Tensor, mass: float = 0.9, max_k: int = 5) -> list[int]:
    """Per row, the fewest top classes whose probabilities reach ``mass`` (at most max_k)."""
    top = probs.sort(dim=-1, descending=True).values[:, :max_k]
    reached = top.cumsum(dim=-1) >= mass - 1e-9
    first = torch.where(reached.any(dim=-1), reached.float().argmax(dim=-1),
                        torch.full((probs.shape[0],), top.shape[1] - 1))
    return (first + 1).tolist()


def estimate_location(probs: torch.Tensor, centroids_deg: torch.Tensor, method: str = "top1",
                      top_k: int = 5) -> torch.Tensor:
    """(N, C) probabilities -> (N, 2) lat/lon degrees.

    ``top1``: centroid of the most probable class; ``weighted``: probability-weighted spherical
    mean of the ``top_k`` most probable classes' centroids.
    """
    centroids = centroids_deg.to(torch.float64).to(probs.device)
    if method == "top1":
        return centroids[probs.argmax(dim=-1)]
    if method != "weighted":
        raise ValueError(f"unknown location method {method!r}: use 'top1' or 'weighted'")
    k = min(top_k, probs.shape[-1])
    p, idx = probs.topk(k, dim=-1)
    return spherical_mean_deg(centroids[idx], p / p.sum(dim=-1, keepdim=True))


@dataclass(frozen=True)
class Prediction:
    """One image's answer at the finest level."""

    cells: list[str]
    probabilities: list[float]
    lat_deg: float
    lon_deg: float


def predict_cells(logits: list[torch.Tensor], tables: ClassTables,
                  temperatures: list[float] | None = None, hierarchical: bool = True,
                  mass: float = 0.9, max_k: int = 5, location: str = "weighted") -> list[Prediction]:
    """Finest-level cells (adaptive top-k) with probabilities and a location per image."""
    log_probs = level_log_probs(logits, temperatures)
    if hierarchical:
        log_probs = hierarchical_log_probs(log_probs, tables)
    probs = log_probs[-1].exp()
    finest = tables.levels[-1]
    where = estimate_location(probs, finest.centroid_tensor(), location, max_k)
    ks = adaptive_top_k(probs, mass, max_k)
    top_p, top_i = probs.topk(min(max_k, probs.shape[-1]), dim=-1)
    return [Prediction([finest.cell_ids[i] for i in top_i[n, :k].tolist()],
                       top_p[n, :k].tolist(), float(where[n, 0]), float(where[n, 1]))
            for n, k in enumerate(ks)]
