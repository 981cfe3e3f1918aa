"""Class hierarchy: classes per level from quadtree cells, fitted on the training images only.

Levels are quadtree depths, coarsest first (default 1, 3, 5, 8). Each level's classes nest
inside the previous level's classes, so every class has exactly one parent class (the first
level's parent is the world, ``parent_class_index = -1``).

How the classes of level L are made, inside each parent class P whose cell is at depth d_P
(the world at depth 0 for the first level):

1. Splitting (top-down). Fixed mode: every cell splits down to depth L. Adaptive mode
   (``max_images`` set, like OSV-5M's quadtree): a cell splits only while it holds more than
   ``max_images`` training images of P, and never below depth L.
2. Claiming (bottom-up, from depth L up to d_P + 1). A cell reached by splitting becomes a
   class when it holds at least ``min_images`` training images of P not claimed by a deeper
   class. Sparser cells claim nothing: their images stay with their parent cell, and so on up.
3. The remainder. P's training images left unclaimed form one more class with P's own cell
   (``cell_id`` shorter than L: "sparse cells merged into the parent's class"), when they
   are at least ``min_images`` or when nothing in P was claimed (then the class is all of P).
   A smaller remainder joins the claimed class of P whose centroid is nearest to it.
   ``is_remainder`` marks the class that takes P's points not in a deeper class.

So every class has at least ``min_images`` training images, by construction. Any point (test
images, new photos) gets a label the same way: the deepest class cell of its parent class that
contains it, else its parent's remainder class (``assign_labels``).

Centroids are the normalised mean of the training images' 3-D unit vectors (the mean position
on the sphere), as latitude/longitude in degrees.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from geo_assets import layout
from geo_assets.cells import points_to_rowcol, rowcol_to_ids
from geo_assets.errors import InputError
from geo_assets.settings import HierarchySettings
from geo_assets.sphere import unit_vectors
from geo_assets.storage import atomic_path, write_json_atomic

CLASS_COLUMNS = ["class_index", "cell_id", "n_images", "n_train", "centroid_lat_deg",
                 "centroid_lon_deg", "parent_class_index", "cell_level", "is_remainder"]


@dataclass(frozen=True)
class Hierarchy:
    levels: tuple[int, ...]
    tables: dict[int, pl.DataFrame]   # CLASS_COLUMNS per level
    labels: dict[int, np.ndarray]     # class index per input image, per level

    def children(self, level: int) -> dict[int, list[int]]:
        """Parent class (previous level) -> its classes at ``level``."""
        t = self.tables[level].group_by("parent_class_index").agg(pl.col("class_index").sort())
        return {int(p): [int(c) for c in cs] for p, cs in t.sort("parent_class_index").iter_rows()}


@dataclass(frozen=True)
class _Points:
    rows: np.ndarray     # at depth dmax
    cols: np.ndarray
    dmax: int

    def codes(self, depth: int) -> np.ndarray:
        shift = self.dmax - depth
        return ((self.rows >> shift) << depth) | (self.cols >> shift)

    def subset(self, mask: np.ndarray) -> _Points:
        return _Points(self.rows[mask], self.cols[mask], self.dmax)


def _key_counts(parent: np.ndarray, code: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """For each point: how many ``mask`` points share its (parent, code); 0 outside mask."""
    df = pl.DataFrame({"p": parent, "c": code, "m": mask})
    return df.select(pl.col("m").cast(pl.Int64).sum().over("p", "c")).to_series().to_numpy() * mask


def _max_depths(pts: _Points, parent, floor, level: int, max_images: int | None) -> np.ndarray:
    """Deepest depth each training point may reach by splitting."""
    depth = np.full(len(parent), level)
    if max_images is None:
        return depth
    stopped = np.zeros(len(parent), bool)
    for d in range(level):
        count = _key_counts(parent, pts.codes(d), np.ones(len(parent), bool))
        stop = ~stopped & (d >= floor) & (count <= max_images)
        depth[stop] = d
        stopped |= stop
    return depth


def _claim(pts: _Points, parent, floor, level: int, settings: HierarchySettings):
    """Depth and code of the class each training point is claimed by (-1: unclaimed)."""
    max_depth = _max_depths(pts, parent, floor, level, settings.max_images)
    depth = np.full(len(parent), -1)
    code = np.zeros(len(parent), np.int64)
    for d in range(level, 0, -1):
        eligible = (depth < 0) & (d > floor) & (d <= max_depth)
        codes = pts.codes(d)
        dense = eligible & (_key_counts(parent, codes, eligible) >= settings.min_images)
        depth[dense] = d
        code[dense] = codes[dense]
    return depth, code


def _sums(frame: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    return frame.group_by(by).agg(n=pl.len(), x=pl.col("x").sum(), y=pl.col("y").sum(),
                                  z=pl.col("z").sum())


def _remainder_targets(claimed: pl.DataFrame, merge: pl.DataFrame) -> pl.DataFrame:
    """For parents whose small remainder merges: the claimed class nearest to it (p, d, c)."""
    cand = merge.join(claimed, on="p", suffix="_c").with_columns(
        score=pl.when(pl.col("n_left") > 0)
        .then((pl.col("x") * pl.col("x_c") + pl.col("y") * pl.col("y_c") + pl.col("z")
               * pl.col("z_c")) / (pl.col("x_c") ** 2 + pl.col("y_c") ** 2
                                   + pl.col("z_c") ** 2).sqrt())
        .otherwise(pl.col("n_c").cast(pl.Float64)))
    return cand.sort("p", "score", "d", "c", descending=[False, True, False, False]) \
        .group_by("p", maintain_order=True).first().select("p", "d", "c")


def _fit_level(train: pl.DataFrame, parents: pl.DataFrame, level: int,
               settings: HierarchySettings) -> pl.DataFrame:
    """Classes of one level: p, d, c, is_remainder (one per parent marks the remainder)."""
    claimed = _sums(train.filter(pl.col("d") >= 0), ["p", "d", "c"])
    left = _sums(train.filter(pl.col("d") < 0), ["p"]).rename({"n": "n_left"})
    per_parent = parents.join(left, on="p", how="left").join(
        claimed.group_by("p").agg(n_claimed=pl.len()), on="p", how="left").with_columns(
        pl.col("n_left", "n_claimed").fill_null(0))
    own_mask = (pl.col("n_left") >= settings.min_images) | (pl.col("n_claimed") == 0)
    own = per_parent.filter(own_mask)
    short = own.filter(pl.col("n_left") < settings.min_images)
    if short.height:
        raise InputError(
            f"only {short['n_left'].sum()} training images in all: fewer than the hierarchy's "
            f"min_images={settings.min_images}; lower min_images or add images")
    merged = _remainder_targets(claimed.select("p", "d", "c", n_c="n", x_c="x", y_c="y",
                                               z_c="z"),
                                per_parent.filter(~own_mask).with_columns(
                                    pl.col("x", "y", "z").fill_null(0.0)))
    classes = pl.concat([
        claimed.select("p", "d", "c").join(merged.with_columns(is_remainder=pl.lit(True)),
                                           on=["p", "d", "c"], how="left")
        .with_columns(pl.col("is_remainder").fill_null(False)),
        own.select("p", d="pd", c="pc", is_remainder=pl.lit(True))])
    return classes.with_columns(cell_id=_cell_ids(classes["d"], classes["c"]))


def _cell_ids(depths: pl.Series, codes: pl.Series) -> pl.Series:
    d, c = depths.to_numpy().astype(np.int64), codes.to_numpy().astype(np.int64)
    out = np.empty(len(d), dtype=object)
    for depth in np.unique(d):
        m = d == depth
        out[m] = rowcol_to_ids(int(depth), c[m] >> depth, c[m] & ((1 << depth) - 1))
    return pl.Series(out.tolist(), dtype=pl.String)


def _label(pts: _Points, parent: np.ndarray, floor: np.ndarray, classes: pl.DataFrame,
           level: int) -> np.ndarray:
    """Class index of each point: deepest class cell of its parent class, else the remainder."""
    label = np.full(len(parent), -1, np.int64)
    claimed = classes.filter(pl.col("d") > 0)
    for d in range(level, 0, -1):
        keys = claimed.filter(pl.col("d") == d).select("p", "c", "class_index")
        if keys.height == 0:
            continue
        probe = pl.DataFrame({"p": parent, "c": pts.codes(d)})
        found = probe.join(keys, on=["p", "c"], how="left", maintain_order="left")
        hit = found["class_index"].to_numpy(allow_copy=True)
        ok = (label < 0) & (d > floor) & ~np.isnan(hit.astype(float))
        label[ok] = hit[ok].astype(np.int64)
    remainder = classes.filter("is_remainder").select("p", "class_index")
    rest = label < 0
    if rest.any():
        fill = pl.DataFrame({"p": parent[rest]}).join(remainder, on="p", how="left",
                                                      maintain_order="left")
        label[rest] = fill["class_index"].fill_null(-1).to_numpy()
    return label


def _class_table(classes: pl.DataFrame, labels: np.ndarray, train: np.ndarray,
                 xyz: np.ndarray) -> pl.DataFrame:
    k = classes.height
    n_images = np.bincount(labels, minlength=k)
    n_train = np.bincount(labels[train], minlength=k)
    sums = np.stack([np.bincount(labels[train], weights=xyz[train, i], minlength=k)
                     for i in range(3)], axis=1)
    unit = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-300)
    return classes.sort("class_index").select(
        "class_index", "cell_id",
        n_images=pl.Series(n_images, dtype=pl.Int64), n_train=pl.Series(n_train, dtype=pl.Int64),
        centroid_lat_deg=pl.Series(np.degrees(np.arcsin(np.clip(unit[:, 2], -1, 1)))),
        centroid_lon_deg=pl.Series(np.degrees(np.arctan2(unit[:, 1], unit[:, 0]))),
        parent_class_index=pl.col("p").cast(pl.Int64), cell_level=pl.col("d").cast(pl.Int64),
        is_remainder="is_remainder")


def fit_hierarchy(lat_deg, lon_deg, is_train, settings: HierarchySettings) -> Hierarchy:
    """Fit the classes of every level on the training points; label all points."""
    is_train = np.asarray(is_train, bool)
    if len(is_train) == 0 or not is_train.any():
        raise InputError("no training images to fit the hierarchy on: the manifest or the "
                         "train split is empty")
    rows, cols = points_to_rowcol(lat_deg, lon_deg, max(settings.levels))
    pts = _Points(rows, cols, max(settings.levels))
    xyz = unit_vectors(lat_deg, lon_deg)
    parent = np.full(len(is_train), -1, np.int64)
    floor = np.zeros(len(is_train), np.int64)
    parents = pl.DataFrame({"p": [-1], "pd": [0], "pc": [0]}, schema={
        "p": pl.Int64, "pd": pl.Int64, "pc": pl.Int64})
    tables, labels = {}, {}
    for level in settings.levels:
        t_pts = pts.subset(is_train)
        depth, code = _claim(t_pts, parent[is_train], floor[is_train], level, settings)
        train = pl.DataFrame({"p": parent[is_train], "d": depth, "c": code,
                              "x": xyz[is_train, 0], "y": xyz[is_train, 1], "z": xyz[is_train, 2]})
        classes = _fit_level(train, parents, level, settings).sort("p", "cell_id") \
            .with_row_index("class_index").with_columns(pl.col("class_index").cast(pl.Int64))
        labels[level] = _label(pts, parent, floor, classes, level)
        tables[level] = _class_table(classes, labels[level], is_train, xyz)
        parent, floor = labels[level], tables[level]["cell_level"].to_numpy()[labels[level]]
        parents = tables[level].select(p="class_index", pd="cell_level", pc=pl.Series(
            classes.sort("class_index")["c"].to_numpy()))
    return Hierarchy(tuple(settings.levels), tables, labels)


def assign_labels(hierarchy: Hierarchy, lat_deg, lon_deg) -> dict[int, np.ndarray]:
    """Class index per level for new points (test images, new photos)."""
    rows, cols = points_to_rowcol(lat_deg, lon_deg, max(hierarchy.levels))
    pts = _Points(rows, cols, max(hierarchy.levels))
    parent = np.full(len(rows), -1, np.int64)
    floor = np.zeros(len(rows), np.int64)
    out = {}
    for level in hierarchy.levels:
        t = hierarchy.tables[level]
        levels_, r, c = _cell_rowcol(t["cell_id"])
        classes = t.select("class_index", "is_remainder", p="parent_class_index",
                           d=pl.Series(levels_), c=pl.Series((r << levels_) | c))
        out[level] = _label(pts, parent, floor, classes, level)
        parent, floor = out[level], levels_[out[level]]
    return out


def _cell_rowcol(cell_ids: pl.Series):
    from geo_assets.cells import ids_to_rowcol

    ids = np.asarray(cell_ids.to_list(), dtype=object)
    return ids_to_rowcol(ids) if len(ids) else (np.zeros(0, np.int64),) * 3


# --- files -------------------------------------------------------------------------------------

def image_cells(lat_deg, lon_deg, levels) -> dict[int, np.ndarray]:
    """Each image's own quadtree cell at every level (the sample JSON's ``cells``)."""
    rows, cols = points_to_rowcol(lat_deg, lon_deg, max(levels))
    return {lv: rowcol_to_ids(lv, rows >> (max(levels) - lv), cols >> (max(levels) - lv))
            for lv in levels}


def _children(h: Hierarchy, level: int, parent_level: int | None) -> dict:
    """``children_<L>.json``: parent class -> classes, and each parent's remainder class."""
    rem = h.tables[level].filter("is_remainder").select("parent_class_index", "class_index")
    return {"level": level, "parent_level": parent_level,
            "children": {str(p): c for p, c in h.children(level).items()},
            "remainder": {str(p): int(c) for p, c in rem.iter_rows()}}


def write_hierarchy(h: Hierarchy, settings: HierarchySettings, image_ids, lat_deg, lon_deg,
                    out_dir: Path) -> dict[str, str]:
    """Write the level tables, children maps, labels and levels.json (names in ``layout``)
    atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cells = image_cells(lat_deg, lon_deg, h.levels)
    labels = pl.DataFrame({"image_id": pl.Series(image_ids, dtype=pl.String),
                           **{f"cell_{lv}": pl.Series(cells[lv], dtype=pl.String)
                              for lv in h.levels},
                           **{f"label_{lv}": h.labels[lv] for lv in h.levels}})
    tables = {layout.LABELS_FILE: labels,
              **{layout.level_table_file(lv): h.tables[lv] for lv in h.levels}}
    for name, frame in tables.items():
        with atomic_path(out_dir / name) as tmp:
            frame.write_parquet(tmp)
    for previous, lv in zip((None, *h.levels), h.levels):
        write_json_atomic(out_dir / layout.children_file(lv), _children(h, lv, previous),
                          sort_keys=False)
    files = {str(lv): layout.level_table_file(lv) for lv in h.levels}
    meta = {"levels": list(h.levels), "min_images": settings.min_images,
            "max_images": settings.max_images,
            "mode": "fixed" if settings.max_images is None else "adaptive",
            "num_classes": {str(lv): h.tables[lv].height for lv in h.levels},
            "level_files": files, "labels_file": layout.LABELS_FILE}
    write_json_atomic(out_dir / layout.LEVELS_META_FILE, meta, sort_keys=False)
    return files
