"""Baselines computed from the same splits as the model, and whether the model beats them.

Every metric is an average (or, for ``median_km``, a median) of a per-image value, so the
model and each baseline are compared image by image with a paired bootstrap: the model
*beats* a baseline on a metric when the 2.5% quantile of the resampled difference is above
zero (better in 97.5% of resamples), *loses* when the 97.5% quantile is below zero, and is
*level* otherwise. A noisy win is therefore not reported as a win.

Baselines (all from the training split, all folds):
- ``chance``: a class drawn uniformly at every level; per image the expected value over the
  finest level's class centroids (median km: the median distance to them).
- ``majority``: the most frequent training class at each level; location: the finest level's
  majority class centroid.
- ``median_point``: the coordinate-wise median of the training images' latitudes and
  longitudes (longitude median taken after rotating the data's widest gap to the antimeridian,
  so a Pacific data set does not average to Africa); classes: the cells containing it.
- ``nearest_neighbour``: the nearest training image (cosine similarity) in the embedding
  space of the frozen, not fine-tuned backbone; its location and its classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from geo_assets.admin import AdminIndex
from training.geo import geoguessr_score, pairwise_haversine_km
from training.metrics import RADII_KM

LOWER_IS_BETTER = ("median_km",)
BOOTSTRAP = 1000
CHANCE_CHUNK = 2048


@dataclass
class Reference:
    """The training split as the baselines see it."""

    coords_deg: np.ndarray  # (N, 2) lat, lon
    labels: np.ndarray  # (N, levels) class index per level
    embeddings: torch.Tensor | None = None  # (N, D) L2-normalised, frozen backbone


@dataclass
class TestSet:
    coords_deg: np.ndarray  # (n, 2)
    labels: np.ndarray  # (n, levels)
    admin: dict[str, np.ndarray]  # metric ("country_acc", "region_acc") -> true codes ("": none)
    embeddings: torch.Tensor | None = None

    def masks(self) -> dict[str, np.ndarray]:
        """Per admin metric, the test images whose true location has a code."""
        return {name: codes != "" for name, codes in self.admin.items()}


def metric_names(levels: list[int], admin: list[str] = ("country_acc",)) -> list[str]:
    return ([f"top1_level_{lv}" for lv in levels] + ["median_km"]
            + [f"acc_{r:g}km" for r in RADII_KM[1:]] + ["geoguessr", *admin])


def per_image(levels: list[int], correct: np.ndarray, km: np.ndarray,
              admin_match: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per-image values whose mean (median for km) is each metric; ``correct``: (n, levels)."""
    out = {f"top1_level_{lv}": correct[:, k].astype(np.float64) for k, lv in enumerate(levels)}
    out["median_km"] = km.astype(np.float64)
    for r in RADII_KM[1:]:
        out[f"acc_{r:g}km"] = (km < r).astype(np.float64)
    out["geoguessr"] = geoguessr_score(torch.as_tensor(km, dtype=torch.float64)).numpy()
    out.update({name: match.astype(np.float64) for name, match in admin_match.items()})
    return out


def aggregate(values: dict[str, np.ndarray], masks: dict[str, np.ndarray]) -> dict[str, float]:
    """Metrics from per-image values; admin accuracies over images with a true code."""
    out = {}
    for name, v in values.items():
        v = v[masks[name]] if name in masks else v
        if len(v) == 0:
            out[name] = float("nan")
        else:
            out[name] = float(np.median(v) if name in LOWER_IS_BETTER else np.mean(v))
    return out


def distances_km(pred_deg: np.ndarray, true_deg: np.ndarray) -> np.ndarray:
    from training.geo import haversine_km

    pred_deg, true_deg = np.array(pred_deg), np.array(true_deg)  # writable copies for torch
    return haversine_km(pred_deg[:, 0], pred_deg[:, 1], true_deg[:, 0], true_deg[:, 1]).numpy()


def point_predictor(test: TestSet, levels: list[int], pred_labels: np.ndarray,
                    pred_deg: np.ndarray, admins: dict[str, AdminIndex]) -> dict[str, np.ndarray]:
    """Per-image values of a predictor that answers one class per level and one point."""
    pred_deg = np.broadcast_to(pred_deg, test.coords_deg.shape)
    match = {}
    for name, index in admins.items():
        truth = test.admin[name]
        match[name] = (index.lookup(pred_deg[:, 0], pred_deg[:, 1]) == truth) & (truth != "")
    return per_image(levels, pred_labels == test.labels, distances_km(pred_deg, test.coords_deg),
                     match)


def chance(test: TestSet, levels: list[int], num_classes: list[int], centroids: np.ndarray,
           centroid_admin: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Expected per-image values of a uniformly drawn class (finest level for location)."""
    n = len(test.coords_deg)
    correct = np.broadcast_to(1.0 / np.asarray(num_classes, dtype=np.float64), (n, len(levels)))
    cols: dict[str, list] = {"median_km": [], "geoguessr": [], **{k: [] for k in centroid_admin}}
    cols.update({f"acc_{r:g}km": [] for r in RADII_KM[1:]})
    cent = torch.as_tensor(centroids, dtype=torch.float64)
    for start in range(0, n, CHANCE_CHUNK):
        d = pairwise_haversine_km(torch.as_tensor(test.coords_deg[start:start + CHANCE_CHUNK]),
                                  cent)
        cols["median_km"].append(d.median(dim=1).values.numpy())
        cols["geoguessr"].append(geoguessr_score(d).mean(dim=1).numpy())
        for r in RADII_KM[1:]:
            cols[f"acc_{r:g}km"].append((d < r).double().mean(dim=1).numpy())
        for name, codes in centroid_admin.items():
            truth = test.admin[name][start:start + CHANCE_CHUNK]
            cols[name].append((codes[None, :] == truth[:, None]).mean(axis=1))
    out = {f"top1_level_{lv}": correct[:, k].copy() for k, lv in enumerate(levels)}
    out.update({k: np.concatenate(v) if v else np.zeros(0) for k, v in cols.items()})
    return out


def median_point(coords_deg: np.ndarray) -> np.ndarray:
    """Coordinate-wise median; longitudes unwrapped at the data's widest empty gap."""
    lon = np.sort(coords_deg[:, 1])
    gaps = np.diff(np.concatenate([lon, lon[:1] + 360.0]))
    cut = lon[(int(np.argmax(gaps)) + 1) % len(lon)]  # the first longitude after the gap
    unwrapped = np.where(coords_deg[:, 1] < cut, coords_deg[:, 1] + 360.0, coords_deg[:, 1])
    med_lon = (float(np.median(unwrapped)) + 180.0) % 360.0 - 180.0
    return np.array([float(np.median(coords_deg[:, 0])), med_lon])


def nearest_neighbour(reference: Reference, test: TestSet) -> np.ndarray:
    """Index of each test image's nearest training image in the frozen embedding space."""
    out = []
    for start in range(0, len(test.embeddings), CHANCE_CHUNK):
        sims = test.embeddings[start:start + CHANCE_CHUNK] @ reference.embeddings.T
        out.append(sims.argmax(dim=1).numpy())
    return np.concatenate(out)


def classes_of_point(point_deg: np.ndarray, centroids_by_level: list[np.ndarray]) -> np.ndarray:
    """Per level, the class whose centroid is nearest to the point."""
    p = torch.as_tensor(point_deg[None, :], dtype=torch.float64)
    return np.array([int(pairwise_haversine_km(p, torch.as_tensor(c)).argmin())
                     for c in centroids_by_level])


def compute_baselines(reference: Reference, test: TestSet, levels: list[int],
                      num_classes: list[int], centroids_by_level: list[np.ndarray],
                      admins: dict[str, AdminIndex]) -> tuple[dict, dict]:
    """Per-image values of every baseline, and a description of each."""
    finest = centroids_by_level[-1]
    cent_admin = {name: index.lookup(finest[:, 0], finest[:, 1]) for name, index in admins.items()}
    values = {"chance": chance(test, levels, num_classes, finest, cent_admin)}
    counts = [np.bincount(reference.labels[:, k], minlength=c) for k, c in enumerate(num_classes)]
    majority = np.array([int(c.argmax()) for c in counts])
    values["majority"] = point_predictor(test, levels, majority[None, :], finest[majority[-1]],
                                         admins)
    median = median_point(reference.coords_deg)
    values["median_point"] = point_predictor(
        test, levels, classes_of_point(median, centroids_by_level)[None, :], median, admins)
    about = {"chance": "a uniformly drawn class; location: expected over the finest classes' "
                       "centroids",
             "majority": "the most frequent training class per level; location: the finest "
                         f"majority class's centroid ({finest[majority[-1]][0]:.2f}, "
                         f"{finest[majority[-1]][1]:.2f})",
             "median_point": "coordinate-wise median of the training locations "
                             f"({median[0]:.2f}, {median[1]:.2f})"}
    if reference.embeddings is not None and test.embeddings is not None:
        nn_index = nearest_neighbour(reference, test)
        values["nearest_neighbour"] = point_predictor(
            test, levels, reference.labels[nn_index], reference.coords_deg[nn_index], admins)
        about["nearest_neighbour"] = ("the nearest training image's location and classes, "
                                      "cosine similarity of the frozen backbone's embeddings")
    return values, about


def compare(model: dict[str, np.ndarray], baseline: dict[str, np.ndarray],
            masks: dict[str, np.ndarray], seed: int = 0,
            resamples: int = BOOTSTRAP) -> dict[str, str]:
    """Per metric: "beats", "level" or "loses" (paired bootstrap over test images)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, mv in model.items():
        bv = baseline[name]
        if name in masks:
            mv, bv = mv[masks[name]], bv[masks[name]]
        if len(mv) == 0:
            out[name] = "n/a"
            continue
        idx = rng.integers(0, len(mv), size=(resamples, len(mv)))
        stat = np.median if name in LOWER_IS_BETTER else np.mean
        diff = stat(mv[idx], axis=1) - stat(bv[idx], axis=1)
        if name in LOWER_IS_BETTER:
            diff = -diff
        low, high = np.quantile(diff, [0.025, 0.975])
        out[name] = "beats" if low > 0 else "loses" if high < 0 else "level"
    return out


def verdict_sentence(verdicts: dict[str, dict[str, str]]) -> str:
    """One plain sentence per baseline for the headline."""
    parts = []
    for name, per_metric in verdicts.items():
        beaten = [m for m, v in per_metric.items() if v == "beats"]
        not_beaten = [m for m, v in per_metric.items() if v in ("level", "loses")]
        if not not_beaten:
            parts.append(f"beats {name} on every metric")
        elif not beaten:
            parts.append(f"does NOT beat {name} on any metric")
        else:
            parts.append(f"does NOT beat {name} on {', '.join(not_beaten)}")
    return "The model " + "; ".join(parts) + "."
