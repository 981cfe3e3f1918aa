"""From per-level logits to cells and a location.

Hierarchical combination: the probability of a class at level k is the product of the
per-level probabilities along its path from the coarsest level (itself, its parent, its
grandparent, ...), renormalised over level k. This is done in log space with probabilities,
never with logits.

Location (``estimate_locations``): ``centroid`` (the top class's centroid), ``weighted_mean``
(probability-weighted spherical mean of the top classes' centroids; it lands between far-apart
cells when the model hesitates between continents), ``regression`` (the top class's centroid
moved by the location head's offset for that class, in cell sizes: OSV-5M's hybrid head),
``retrieval`` (the location of the most similar training image in the top class), ``density``
(the training-image location, among the top classes' images, with the most predicted
probability within ``RetrievalIndex.radius_km`` of it: the point most likely to be within that
radius of the truth, which stays inside one cluster of places instead of between them).
Training picks the method with the lowest validation median km and records it in ``model.pt``
(``ModelBundle.location_method``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from training.geo import haversine_km, spherical_mean_deg
from training.hierarchy import ClassTables, LevelTable

LOCATION_METHODS = ("centroid", "weighted_mean", "regression", "retrieval", "density")
DENSITY_TOP_K = 5        # classes whose training images are candidates and probability mass
DENSITY_PER_CLASS = 32   # training images kept per class for ``density`` (evenly spaced)


@dataclass(frozen=True)
class RetrievalIndex:
    """Training images' L2-normalised embeddings (M, D), lat/lon (M, 2) and finest class (M,);
    ``radius_km``: the ``density`` estimator's radius, chosen on the validation fold."""

    embeddings: torch.Tensor
    lat_lon_deg: torch.Tensor
    labels: torch.Tensor
    radius_km: float | None = None

    def to_dict(self) -> dict:
        return {"embeddings": self.embeddings.half(), "lat_lon_deg": self.lat_lon_deg.float(),
                "labels": self.labels.int(), "radius_km": self.radius_km}

    @classmethod
    def from_dict(cls, data: dict) -> RetrievalIndex:
        return cls(data["embeddings"], data["lat_lon_deg"], data["labels"].long(),
                   data.get("radius_km"))


def class_points(index: RetrievalIndex, num_classes: int,
                 per_class: int = DENSITY_PER_CLASS) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, S, 2) lat/lon of up to ``per_class`` training images per class (evenly spaced in
    index order) and the (C, S) mask of real entries."""
    points = torch.zeros(num_classes, per_class, 2, dtype=torch.float64)
    valid = torch.zeros(num_classes, per_class, dtype=torch.bool)
    order = torch.argsort(index.labels, stable=True)
    counts = torch.bincount(index.labels, minlength=num_classes)
    starts = torch.cumsum(counts, 0) - counts
    for c in counts.nonzero().flatten().tolist():
        n = int(counts[c])
        picked = order[starts[c] + torch.linspace(0, n - 1, min(n, per_class)).round().long()]
        points[c, :len(picked)] = index.lat_lon_deg[picked].to(torch.float64)
        valid[c, :len(picked)] = True
    return points, valid


def densest_point(probs: torch.Tensor, index: RetrievalIndex, fallback_deg: torch.Tensor,
                  top_k: int = DENSITY_TOP_K, chunk: int = 256) -> torch.Tensor:
    """Per image, the candidate (a training image of one of its ``top_k`` classes) with the most
    probability within ``index.radius_km``: sum over those classes of p(class) x the share of
    the class's training images within the radius. ``fallback_deg`` rows where the top classes
    have no training image in the index."""
    if index.radius_km is None:
        raise ValueError("location method 'density' needs a radius (chosen on validation)")
    points, valid = class_points(index, probs.shape[-1])
    top_p, top_i = probs.double().topk(min(top_k, probs.shape[-1]), dim=-1)
    out = fallback_deg.to(torch.float64).clone()
    for s in range(0, len(probs), chunk):
        cand = points[top_i[s:s + chunk]].flatten(1, 2)                      # (B, K*S, 2)
        ok = valid[top_i[s:s + chunk]]                                        # (B, K, S)
        weight = (top_p[s:s + chunk, :, None] * ok / ok.sum(-1, keepdim=True).clamp(min=1))
        d = haversine_km(cand[:, :, None, 0], cand[:, :, None, 1], cand[:, None, :, 0],
                         cand[:, None, :, 1])                                # (B, K*S, K*S)
        score = ((d <= index.radius_km) * weight.flatten(1)[:, None, :]).sum(-1)
        score = score.masked_fill(~ok.flatten(1), -1.0)
        best = score.argmax(-1)
        found = ok.flatten(1).any(-1)
        picked = cand[torch.arange(len(cand)), best]
        out[s:s + chunk] = torch.where(found[:, None], picked, out[s:s + chunk])
    return out


def retrieve_in_top_cell(embeddings: torch.Tensor, top: torch.Tensor, index: RetrievalIndex,
                         fallback_deg: torch.Tensor) -> torch.Tensor:
    """Per query, the location of the most similar training image of its top class (cosine
    similarity); ``fallback_deg`` rows where the class has no training image in the index."""
    q = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    sims = q @ index.embeddings.float().T  # (N, M)
    same = index.labels[None, :].to(top.device) == top[:, None]
    sims = sims.masked_fill(~same, float("-inf"))
    best = sims.argmax(dim=-1)
    found = same.any(dim=-1)
    where = index.lat_lon_deg.to(torch.float64)[best]
    return torch.where(found[:, None], where, fallback_deg.to(torch.float64))


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


def cell_sizes_deg(cell_ids) -> torch.Tensor:
    """(C, 2) latitude and longitude span in degrees of each quadtree cell id."""
    depth = torch.tensor([len(c) for c in cell_ids], dtype=torch.float64)
    return torch.stack([180.0 / 2 ** depth, 360.0 / 2 ** depth], dim=-1)


def offset_targets(true_deg: torch.Tensor, centroids_deg: torch.Tensor,
                   sizes_deg: torch.Tensor) -> torch.Tensor:
    """(N, 2) offsets of the true points from their classes' centroids (rows already picked
    per image), in cell sizes, clamped to [-1, 1]; longitude wraps at the antimeridian."""
    d = true_deg.to(torch.float64) - centroids_deg.to(torch.float64)
    d[:, 1] = torch.remainder(d[:, 1] + 180.0, 360.0) - 180.0
    return (d / sizes_deg.to(torch.float64)).clamp(-1.0, 1.0)


def apply_offsets(centroids_deg: torch.Tensor, sizes_deg: torch.Tensor,
                  offsets: torch.Tensor) -> torch.Tensor:
    """Inverse of ``offset_targets``: centroid + offset * size, latitude clamped to the poles,
    longitude wrapped to [-180, 180)."""
    out = centroids_deg.to(torch.float64) + offsets.to(torch.float64).clamp(-1, 1) * sizes_deg
    out[:, 0] = out[:, 0].clamp(-90.0, 90.0)
    out[:, 1] = torch.remainder(out[:, 1] + 180.0, 360.0) - 180.0
    return out


def estimate_locations(probs: torch.Tensor, table: LevelTable, method: str = "centroid", *,
                       offsets: torch.Tensor | None = None, top_k: int = 5,
                       embeddings: torch.Tensor | None = None,
                       index: RetrievalIndex | None = None) -> torch.Tensor:
    """(N, C) finest-level probabilities -> (N, 2) lat/lon degrees by ``method`` (one of
    ``LOCATION_METHODS``; ``regression`` needs the model's (N, C, 2) ``offsets``,
    ``retrieval`` the images' pooled ``embeddings`` and the model's training-image ``index``:
    the most similar training image inside the top cell, GeoCLIP / PIGEON style)."""
    centroids = table.centroid_tensor().to(probs.device)
    top = probs.argmax(dim=-1)
    if method == "centroid":
        return centroids[top]
    if method == "weighted_mean":
        k = min(top_k, probs.shape[-1])
        p, idx = probs.topk(k, dim=-1)
        return spherical_mean_deg(centroids[idx], p / p.sum(dim=-1, keepdim=True))
    if method == "regression":
        if offsets is None:
            raise ValueError("location method 'regression' needs the model's offsets "
                             "(model(images, with_offsets=True))")
        sizes = cell_sizes_deg(table.cell_ids).to(probs.device)
        picked = offsets[torch.arange(len(top), device=offsets.device), top.to(offsets.device)]
        return apply_offsets(centroids[top], sizes[top], picked.to(probs.device))
    if method == "retrieval":
        if embeddings is None or index is None:
            raise ValueError("location method 'retrieval' needs the images' embeddings and the "
                             "model's retrieval index")
        return retrieve_in_top_cell(embeddings, top, index, centroids[top])
    if method == "density":
        if index is None:
            raise ValueError("location method 'density' needs the model's retrieval index")
        return densest_point(probs, index, centroids[top], top_k)
    raise ValueError(f"unknown location method {method!r}: use one of "
                     f"{', '.join(LOCATION_METHODS)}")


def usable_method(method: str, offsets, index) -> str:
    """``method`` in ``estimate_locations``' names (the older top1/weighted mapped), or the
    top cell's centroid when the model lacks what it needs (an offset head, a retrieval index)."""
    method = {"top1": "centroid", "weighted": "weighted_mean"}.get(method, method)
    if (method == "regression" and offsets is None) or \
            (method in ("retrieval", "density") and index is None) or \
            (method == "density" and index.radius_km is None):
        return "centroid"
    return method


def estimate_location(probs: torch.Tensor, centroids_deg: torch.Tensor, method: str = "top1",
                      top_k: int = 5) -> torch.Tensor:
    """Older interface: ``top1`` = ``centroid``, ``weighted`` = ``weighted_mean``."""
    if method not in ("top1", "weighted"):
        raise ValueError(f"unknown location method {method!r}: use 'top1' or 'weighted'")
    table = LevelTable(0, ("",) * len(centroids_deg),
                       tuple(map(tuple, centroids_deg.tolist())), (-1,) * len(centroids_deg))
    return estimate_locations(probs, table, "centroid" if method == "top1" else "weighted_mean",
                              top_k=top_k)


def finest_probs(logits: list[torch.Tensor], tables: ClassTables,
                 temperatures: list[float] | None = None,
                 hierarchical: bool = True) -> torch.Tensor:
    """(N, C_finest) probabilities, hierarchical by default."""
    log_probs = level_log_probs(logits, temperatures)
    if hierarchical:
        log_probs = hierarchical_log_probs(log_probs, tables)
    return log_probs[-1].exp()


@dataclass(frozen=True)
class Prediction:
    """One image's answer at the finest level."""

    cells: list[str]
    probabilities: list[float]
    lat_deg: float
    lon_deg: float


def predict_cells(logits: list[torch.Tensor], tables: ClassTables,
                  temperatures: list[float] | None = None, hierarchical: bool = True,
                  mass: float = 0.9, max_k: int = 5, location: str = "weighted_mean",
                  offsets: torch.Tensor | None = None, embeddings: torch.Tensor | None = None,
                  index: RetrievalIndex | None = None) -> list[Prediction]:
    """Finest-level cells (adaptive top-k) with probabilities and a location per image
    (``location``: a method of ``estimate_locations``; ``top1``/``weighted`` still accepted)."""
    probs = finest_probs(logits, tables, temperatures, hierarchical)
    finest = tables.levels[-1]
    method = {"top1": "centroid", "weighted": "weighted_mean"}.get(location, location)
    where = estimate_locations(probs, finest, method, offsets=offsets, top_k=max_k,
                               embeddings=embeddings, index=index)
    ks = adaptive_top_k(probs, mass, max_k)
    top_p, top_i = probs.topk(min(max_k, probs.shape[-1]), dim=-1)
    return [Prediction([finest.cell_ids[i] for i in top_i[n, :k].tolist()],
                       top_p[n, :k].tolist(), float(where[n, 0]), float(where[n, 1]))
            for n, k in enumerate(ks)]
