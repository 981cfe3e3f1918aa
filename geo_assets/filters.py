"""Filters over one cell's images: brightness, content duplicates, spatial dedup, sequence cap,
perceptual-hash near duplicates.

Every filter takes arrays in a fixed priority order (the caller sorts: earlier capture first,
then image id) and returns a boolean mask or drop decisions; earlier images win, so the
result depends only on the inputs, never on crawl order or thread timing.

Spatial dedup works on 3-D unit vectors (``geo_assets.sphere``) with a
``scipy.spatial.KDTree``: one chord radius is right everywhere. Images of one
capture group taken at exactly the same point (Street View headings of one pano, the four
views of a place) form one location and are kept or dropped together.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import KDTree

from geo_assets.settings import FilterSettings
from geo_assets.sphere import km_to_chord, unit_vectors


def brightness_reasons(brightness: np.ndarray, settings: FilterSettings) -> np.ndarray:
    """Per image: "too_dark", "too_bright" or "" (object array)."""
    b = np.asarray(brightness, dtype=np.float64)
    out = np.full(b.shape, "", dtype=object)
    out[b <= settings.min_brightness] = "too_dark"
    out[b > settings.max_brightness] = "too_bright"
    return out


def location_units(lat, lon, group) -> np.ndarray:
    """An integer per image; images of one group at the identical point share a unit."""
    keys = {}
    return np.array([keys.setdefault((g, la, lo), len(keys))
                     for g, la, lo in zip(group, lat, lon)], dtype=np.int64)


def _neighbours(points: np.ndarray, radius_m: float) -> list[list[int]]:
    pairs = KDTree(points).query_pairs(km_to_chord(radius_m / 1000.0), output_type="ndarray")
    adj: list[list[int]] = [[] for _ in range(len(points))]
    for i, j in pairs:
        adj[i].append(j)
        adj[j].append(i)
    return adj


def spatial_dedup(lat, lon, group, candidate: np.ndarray, min_distance_m: float,
                  blockers: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Greedy dedup in array order: returns a mask of candidates dropped as too close.

    ``candidate`` marks the images still in play (earlier filters passed). ``blockers`` are
    (lat, lon) of images kept elsewhere (neighbouring cells) that always win.
    """
    n = len(candidate)
    dropped = np.zeros(n, dtype=bool)
    if min_distance_m <= 0 or not candidate.any():
        return dropped
    units = location_units(lat, lon, group)
    idx = np.flatnonzero(candidate)
    first = {}
    for i in idx:  # one representative point per location unit, in priority order
        first.setdefault(units[i], i)
    reps = np.array(list(first.values()), dtype=np.int64)
    pts = unit_vectors(np.asarray(lat)[reps], np.asarray(lon)[reps])
    blocked = np.zeros(len(reps), dtype=bool)
    if blockers is not None and len(blockers[0]):
        tree = KDTree(unit_vectors(*blockers))
        hits = tree.query_ball_point(pts, km_to_chord(min_distance_m / 1000.0),
                                    return_length=True)
        blocked = np.asarray(hits) > 0
    adj = _neighbours(pts, min_distance_m)
    kept = np.zeros(len(reps), dtype=bool)
    for k in range(len(reps)):
        kept[k] = not blocked[k] and not any(kept[j] for j in adj[k] if j < k)
    dropped_units = {units[reps[k]] for k in np.flatnonzero(~kept)}
    dropped[idx] = [units[i] in dropped_units for i in idx]
    return dropped


def sequence_cap(group, captured_ms: np.ndarray, candidate: np.ndarray, k: int) -> np.ndarray:
    """Mask of candidates dropped because their capture group already has ``k`` kept images.

    Within a group the ``k`` kept images are spread evenly over its capture order.
    """
    dropped = np.zeros(len(candidate), dtype=bool)
    if k <= 0:
        return dropped
    members: dict[object, list[int]] = {}
    for i in np.flatnonzero(candidate):
        if group[i] is not None:
            members.setdefault(group[i], []).append(i)
    for rows in members.values():
        if len(rows) <= k:
            continue
        order = sorted(rows, key=lambda i: (captured_ms[i], i))
        keep = {order[j] for j in np.linspace(0, len(order) - 1, k).round().astype(int)}
        for i in rows:
            dropped[i] = i not in keep
    return dropped


def _hash_bits(phash: list[str]) -> np.ndarray:
    return np.array([int(h, 16) for h in phash], dtype=np.uint64)


def _popcount(x: np.ndarray) -> np.ndarray:
    return np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)


def hash_blocks(bits: np.ndarray, n_blocks: int) -> np.ndarray:
    """(N, n_blocks) values of ``n_blocks`` disjoint bit ranges of 64-bit hashes."""
    edges = np.linspace(0, 64, n_blocks + 1).round().astype(np.uint64)
    out = np.empty((len(bits), n_blocks), np.uint64)
    for b in range(n_blocks):
        width = edges[b + 1] - edges[b]
        mask = np.uint64((1 << int(width)) - 1)
        out[:, b] = (bits >> edges[b]) & mask
    return out


def near_duplicates(phash, candidate: np.ndarray, max_distance: int,
                    units: np.ndarray | None = None) -> np.ndarray:
    """Greedy in array order: mask of candidates whose perceptual hash is within
    ``max_distance`` bits of an earlier kept image's. Images of one location unit (the
    headings of one pano) are different views, never compared with each other.

    Multi-index hashing: two hashes within ``max_distance`` bits agree exactly on at least
    one of ``max_distance + 1`` disjoint bit blocks (pigeonhole), so an image is compared only
    with the kept images sharing a block value with it, not with every kept image; the result
    is the plain greedy's (``tests/ingest/test_ingest_filters.py`` compares them)."""
    dropped = np.zeros(len(candidate), dtype=bool)
    idx = [i for i in np.flatnonzero(candidate) if phash[i]]
    if max_distance < 0 or len(idx) < 2:
        return dropped
    bits = _hash_bits([phash[i] for i in idx])
    unit = np.asarray(units)[idx] if units is not None else np.arange(len(idx))
    n_blocks = min(max_distance + 1, 64)
    blocks = hash_blocks(bits, n_blocks).tolist()
    index: list[dict[int, list[int]]] = [{} for _ in range(n_blocks)]
    for pos, i in enumerate(idx):
        near = {k for b, v in enumerate(blocks[pos]) for k in index[b].get(v, ())}
        if near:
            k = np.fromiter(near, np.int64, len(near))
            close = (_popcount(bits[k] ^ bits[pos]) <= max_distance) & (unit[k] != unit[pos])
            if close.any():
                dropped[i] = True
                continue
        for b, v in enumerate(blocks[pos]):
            index[b].setdefault(v, []).append(pos)
    return dropped


def duplicate_content(sha256, candidate: np.ndarray) -> np.ndarray:
    """Mask of candidates whose bytes (SHA-256) equal an earlier candidate's."""
    seen: set[str] = set()
    dropped = np.zeros(len(candidate), dtype=bool)
    for i in np.flatnonzero(candidate):
        if sha256[i] in seen:
            dropped[i] = True
        seen.add(sha256[i])
    return dropped


def cross_partition_dedup(lat, lon, partition, min_distance_m: float) -> np.ndarray:
    """Greedy in array order over images kept in their own partitions (cells): returns, per
    image, the index of the earlier kept image from another partition within
    ``min_distance_m`` that displaces it, or -1 when it stays."""
    n = len(partition)
    blocker = np.full(n, -1, dtype=np.int64)
    if min_distance_m <= 0 or n < 2:
        return blocker
    adj = _neighbours(unit_vectors(lat, lon), min_distance_m)
    kept = np.ones(n, dtype=bool)
    for k in range(n):
        for j in sorted(adj[k]):
            if j < k and kept[j] and partition[j] != partition[k]:
                kept[k], blocker[k] = False, j
                break
    return blocker
