"""The crawl plan: density-adaptive crawl cells and per-cell image budgets.

A world crawl is planned once per region, before anything is fetched:

1. Coverage: where imagery exists, as weighted points (``Coverage``): Mapillary's coverage
   tiles at a low zoom (``mapillary_coverage``: one point per sequence at zooms <= 5, per
   sequence line at 6-13, per image at 14), Street View metadata samples
   (``streetview_coverage``) or a local folder's photos (``points_coverage``).
2. Cells: every crawl cell whose estimated coverage exceeds ``split_threshold`` splits into
   its four children, recursively, at most ``max_split_levels`` below the crawl level
   (``split_cells``). Children without estimated coverage are left out; nothing merges below
   the crawl level. A split cell is *retired*: its partition goes, its stored images stay.
3. Budgets: ``total_images`` shared among the plan's cells by a policy (``allocate``):
   uniform, proportional to coverage with a per-cell cap, or proportional to a user's weight
   column (points with a weight, e.g. population, summed per cell).
4. Dry run (``dry_run``): expected requests and images per source, and the cost of the Street
   View images, from the plan alone.

The plan is a table (``layout.CRAWL_PLAN``), a JSON summary with the dry run
(``layout.CRAWL_PLAN_SUMMARY``) and a map (``layout.CRAWL_PLAN_PNG``); the per-cell crawl
reads each cell's budget with ``plan_budgets``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from geo_assets import layout
from geo_assets.cells import MAX_LEVEL, cells_bounds, points_to_cells
from geo_assets.errors import InputError
from geo_assets.settings import MapillarySettings, PlanSettings, StreetViewSettings
from geo_assets.storage import DataRoot

PLAN_VERSION = 1


@dataclass(frozen=True)
class Coverage:
    """Where imagery exists: points with a weight each, in ``unit`` (sequences, images...)."""

    lat_deg: np.ndarray
    lon_deg: np.ndarray
    weight: np.ndarray
    unit: str
    source: str
    requests: int = 0  # requests spent to estimate it

    def __post_init__(self) -> None:
        if not (len(self.lat_deg) == len(self.lon_deg) == len(self.weight)):
            raise InputError("coverage lat, lon and weight arrays differ in length")


def points_coverage(lat, lon, weight=None, *, unit: str = "photos",
                    source: str = "local") -> Coverage:
    """Coverage from known points (a local folder's photos, a weights table)."""
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    w = np.ones(len(lat)) if weight is None else np.asarray(weight, dtype=np.float64)
    ok = np.isfinite(lat) & np.isfinite(lon) & np.isfinite(w) & (np.abs(lat) <= 90) & \
        (np.abs(lon) <= 180)
    return Coverage(lat[ok], lon[ok], w[ok], unit, source)


def mapillary_coverage(client, cells: list[str], zoom: int) -> Coverage:
    """Coverage from Mapillary's ``mly1_public`` tiles at ``zoom``: one point per feature
    (its first vertex), so the unit is sequences below zoom 14 and images at 14. ``client``
    is a ``geo_assets.clients.mapillary.MapillaryClient``."""
    from geo_assets.clients.vector_tiles import decode_tile, tiles_covering

    tiles = sorted({t for b in cells_bounds(cells) for t in tiles_covering(tuple(b), zoom)})
    lon, lat = [], []
    for x, y in tiles:
        data = client.coverage_tile(zoom, x, y)
        if not data:
            continue
        try:
            layers = decode_tile(data, zoom, x, y)
        except ValueError as exc:
            raise InputError(f"coverage tile {zoom}/{x}/{y} is unreadable: {exc}") from exc
        for name in ("image", "sequence", "overview"):
            for feature in layers.get(name, []):
                if len(feature.lonlat):
                    lon.append(feature.lonlat[0, 0])
                    lat.append(feature.lonlat[0, 1])
            if layers.get(name):
                break  # the finest layer present; coarser ones repeat it
    unit = "images" if zoom >= 14 else "sequences"
    cov = points_coverage(lat, lon, unit=unit, source="mapillary")
    return Coverage(cov.lat_deg, cov.lon_deg, cov.weight, unit, "mapillary", len(tiles))


def streetview_coverage(client, cells: list[str], samples_per_cell: int, seed: int = 0,
                        land_of=None) -> Coverage:
    """Coverage from Street View metadata lookups (free) at ``samples_per_cell`` points of
    each cell's land part, each searching a radius that lets the samples cover the cell; a
    pano found counts ``1 / samples_per_cell``. ``client`` is a ``StreetViewClient``."""
    from geo_assets.clients.streetview import covering_radius_m, sample_points

    rng = np.random.default_rng(seed)
    lat, lon, w = [], [], []
    requests = 0
    for cell in cells:
        land = land_of(cell) if land_of is not None else None
        radius = covering_radius_m(cell, samples_per_cell)  # the samples' circles cover it
        for p_lat, p_lon in sample_points(cell, land, samples_per_cell, rng):
            requests += 1
            meta = client.metadata(float(p_lat), float(p_lon), radius)
            loc = meta.get("location") if meta.get("status") == "OK" else None
            if loc:
                lat.append(float(loc["lat"]))
                lon.append(float(loc["lng"]))
                w.append(1.0 / max(1, samples_per_cell))
    cov = points_coverage(lat, lon, w, unit="pano share", source="streetview")
    return Coverage(cov.lat_deg, cov.lon_deg, cov.weight, cov.unit, cov.source, requests)


def estimate_coverage(source, cells: list[str], settings: PlanSettings, *, seed: int = 0,
                      land_of=None) -> Coverage:
    """Coverage of ``cells`` from an opened image source (``geo_assets.clients``): Mapillary
    tiles, Street View metadata samples (on each cell's land, ``land_of(cell)``) or a local
    folder's photos."""
    name = str(getattr(source, "name", ""))
    if name == "mapillary":
        return mapillary_coverage(source.client, cells, settings.coverage_zoom)
    if name == "streetview":
        return streetview_coverage(source.client, cells, settings.streetview_samples_per_cell,
                                   seed, land_of)
    if name == "local":
        photos = source.photos
        return points_coverage([p.lat for p in photos], [p.lon for p in photos])
    raise InputError(f"plan source {name!r} is unknown: use mapillary, streetview or local")


def load_weights(path: str, column: str) -> Coverage:
    """A user's weights table (CSV or Parquet: lat_deg, lon_deg, ``column``) as points."""
    import polars as pl

    p = Path(path)
    if not p.is_file():
        raise InputError(f"plan weights file {path} does not exist")
    frame = pl.read_parquet(p) if p.suffix == ".parquet" else pl.read_csv(p)
    missing = {"lat_deg", "lon_deg", column} - set(frame.columns)
    if missing:
        raise InputError(f"plan weights file {path} lacks columns {sorted(missing)}: it needs "
                         f"lat_deg, lon_deg and {column}")
    w = frame[column].cast(pl.Float64, strict=False).to_numpy()
    if np.any(~np.isfinite(w)) or np.any(w < 0):
        raise InputError(f"plan weights file {path}: column {column} must hold numbers >= 0")
    return points_coverage(frame["lat_deg"].to_numpy(), frame["lon_deg"].to_numpy(), w,
                           unit=column, source="weights")


class CellSums:
    """Sums of point weights inside any cell down to ``level``, by prefix search."""

    def __init__(self, cov: Coverage, level: int) -> None:
        ids = points_to_cells(cov.lat_deg, cov.lon_deg, level) if len(cov.lat_deg) else \
            np.zeros(0, dtype="<U1")
        order = np.argsort(ids, kind="stable")
        self.ids = ids[order]
        self.cum = np.concatenate([[0.0], np.cumsum(cov.weight[order])])

    def __call__(self, cells) -> np.ndarray:
        cells = np.asarray(cells, dtype=str)
        if not len(cells):
            return np.zeros(0)
        lo = np.searchsorted(self.ids, cells, side="left")
        hi = np.searchsorted(self.ids, np.char.add(cells, "4"), side="left")
        return self.cum[hi] - self.cum[lo]


@dataclass(frozen=True)
class SplitResult:
    cells: list[str]           # the plan's cells, sorted
    crawl_cell: list[str]      # each one's crawl-level ancestor
    coverage: np.ndarray       # estimated coverage of each
    retired: list[str]         # split cells (partitions retired, images kept)
    empty_children: int        # children left out for lack of coverage


def split_cells(crawl_cells: list[str], sums: CellSums, threshold: float,
                max_level: int) -> SplitResult:
    """Split every cell above ``threshold`` into its children, down to ``max_level``."""
    frontier = np.array(sorted(set(crawl_cells)), dtype=str)
    final, retired, empty = [], [], 0
    while len(frontier):
        cov = sums(frontier)
        levels = np.char.str_len(frontier)
        split = (cov > threshold) & (levels < max_level)
        final.extend(frontier[~split].tolist())
        retired.extend(frontier[split].tolist())
        children = np.array([p + d for p in frontier[split] for d in "0123"], dtype=str)
        has = sums(children) > 0 if len(children) else np.zeros(0, bool)
        empty += int((~has).sum())
        frontier = children[has]
    final.sort()
    base = min((len(c) for c in crawl_cells), default=0)
    return SplitResult(final, [c[:base] for c in final], sums(final), sorted(retired), empty)


def allocate(shares, total: int, cap: float | None = None) -> np.ndarray:
    """Integers summing to ``total`` (less when every cell is capped), proportional to
    ``shares`` with none above ``cap``: capped cells' excess goes to the others; rounding
    by largest remainder, ties to the earlier cell."""
    s = np.clip(np.asarray(shares, dtype=np.float64), 0, None)
    n = len(s)
    if n == 0 or total <= 0:
        return np.zeros(n, dtype=np.int64)
    if s.sum() == 0:
        s = np.ones(n)
    limit = np.inf if cap is None else float(cap)
    x = np.zeros(n)
    capped = np.zeros(n, bool)
    while True:
        free = ~capped & (s > 0)
        if not free.any():
            break
        x[free] = (total - x[capped].sum()) * s[free] / s[free].sum()
        over = free & (x > limit)
        if not over.any():
            break
        x[over], capped[over] = limit, True
    goal = int(min(total, math.floor(x.sum() + 1e-6)))
    out = np.floor(x + 1e-9).astype(np.int64)
    rest = goal - int(out.sum())
    if rest > 0:
        room = (out < limit) if cap is not None else np.ones(n, bool)
        frac = np.where(room, x - out, -1.0)
        out[np.argsort(-frac, kind="stable")[:rest]] += 1
    return out


@dataclass(frozen=True)
class CrawlPlan:
    cells: list[str]
    crawl_cell: list[str]
    coverage: np.ndarray
    weight: np.ndarray
    images: np.ndarray
    retired: list[str]
    crawl_level: int
    coverage_unit: str
    settings: PlanSettings
    empty_children: int = 0
    coverage_requests: int = 0
    extra: dict = field(default_factory=dict)

    def table(self):
        """The plan as a polars table, one row per plan cell."""
        import polars as pl

        b = cells_bounds(self.cells) if self.cells else np.zeros((0, 4))
        return pl.DataFrame({
            "cell_id": self.cells, "level": [len(c) for c in self.cells],
            "crawl_cell": self.crawl_cell, "split": [len(c) > self.crawl_level
                                                     for c in self.cells],
            "coverage": self.coverage.astype(np.float64), "weight": self.weight,
            "images": self.images.astype(np.int64),
            "min_lon": b[:, 0], "min_lat": b[:, 1], "max_lon": b[:, 2], "max_lat": b[:, 3]},
            schema_overrides={"cell_id": pl.String, "crawl_cell": pl.String})

    def budgets(self) -> dict[str, int]:
        return dict(zip(self.cells, (int(v) for v in self.images)))


def build_plan(crawl_cells: list[str], coverage: Coverage, settings: PlanSettings, *,
               images_per_cell: int, weights: Coverage | None = None) -> CrawlPlan:
    """The plan for ``crawl_cells`` (all at one level): split dense cells, share the target."""
    levels = {len(c) for c in crawl_cells}
    if len(levels) > 1:
        raise InputError(f"crawl cells of several levels {sorted(levels)}: plan one level")
    crawl_level = levels.pop() if levels else 0
    max_level = min(MAX_LEVEL, crawl_level + settings.max_split_levels)
    split = split_cells(crawl_cells, CellSums(coverage, max_level), settings.split_threshold,
                        max_level)
    w = CellSums(weights, max_level)(split.cells) if weights is not None else \
        np.ones(len(split.cells))
    if settings.total_images == 0:
        images = np.full(len(split.cells), images_per_cell, dtype=np.int64)
    elif settings.policy == "uniform":
        images = allocate(np.ones(len(split.cells)), settings.total_images)
    else:
        shares = split.coverage if settings.policy == "coverage" else w
        images = allocate(shares, settings.total_images, settings.max_images_per_cell)
    return CrawlPlan(split.cells, split.crawl_cell, split.coverage, w, images, split.retired,
                     crawl_level, coverage.unit, settings, split.empty_children,
                     coverage.requests)


# --- dry run --------------------------------------------------------------------------------

def _cell_tiles(bbox, ms: MapillarySettings) -> int:
    """Coverage tiles the Mapillary listing of one cell reads (as ``coverage_points``)."""
    from geo_assets.clients.mapillary import auto_zoom
    from geo_assets.clients.vector_tiles import tiles_covering

    zoom = ms.coverage_zoom or auto_zoom(bbox)
    tiles = tiles_covering(bbox, zoom)
    while len(tiles) > 256 and zoom > 0:
        zoom -= 1
        tiles = tiles_covering(bbox, zoom)
    return len(tiles)


def _search_boxes(bbox, ms: MapillarySettings) -> int:
    nx = math.ceil((bbox[2] - bbox[0]) / ms.box_deg - 1e-9)
    ny = math.ceil((bbox[3] - bbox[1]) / ms.box_deg - 1e-9)
    return nx * ny


def dry_run(plan: CrawlPlan, sources: list[str], *,
            mapillary: MapillarySettings | None = None,
            streetview: StreetViewSettings | None = None) -> dict[str, dict]:
    """Expected requests and images per source, before anything is fetched. Listing request
    counts are upper bounds (a listing stops once it has its budget); downloads are one per
    image; Street View's cost counts image requests only (metadata lookups are free)."""
    ms, ss = mapillary or MapillarySettings(), streetview or StreetViewSettings()
    active = [i for i, n in enumerate(plan.images) if n > 0]
    bounds = cells_bounds([plan.cells[i] for i in active]) if active else np.zeros((0, 4))
    images = int(plan.images.sum())
    out: dict[str, dict] = {}
    if "mapillary" in sources:
        tiles = sum(_cell_tiles(tuple(b), ms) for b in bounds) if ms.use_coverage_tiles else 0
        search = sum(min(ms.max_search_requests, _search_boxes(tuple(b), ms)) for b in bounds)
        out["mapillary"] = {"cells": len(active), "images": images,
                            "requests": {"tiles": tiles + plan.coverage_requests,
                                         "search_max": search, "entity": 0, "cdn": images}}
    if "streetview" in sources:
        heads = max(1, len(ss.headings))
        panos = [math.ceil(int(n) / heads) for n in plan.images if n > 0]
        n_img = sum(panos) * heads
        out["streetview"] = {
            "cells": len(active), "images": n_img, "panos": sum(panos),
            "requests": {"metadata_max": len(active) * ss.max_lookups, "images": n_img},
            "cost_usd": round(n_img / 1000 * plan.settings.streetview_usd_per_1000, 2)}
    if "local" in sources:
        out["local"] = {"cells": len(active), "images": images, "requests": {}}
    return out


# --- storage --------------------------------------------------------------------------------

def summary(plan: CrawlPlan, dry: dict[str, dict]) -> dict:
    """The plan's JSON summary: settings, counts and the dry run."""
    split = [c for c in plan.cells if len(c) > plan.crawl_level]
    return {
        "version": PLAN_VERSION, "settings": asdict(plan.settings),
        "crawl_level": plan.crawl_level, "cells": len(plan.cells), "split_cells": len(split),
        "retired_cells": plan.retired, "empty_children_left_out": plan.empty_children,
        "coverage_unit": plan.coverage_unit, "coverage_total": float(plan.coverage.sum()),
        "images_total": int(plan.images.sum()), "dry_run": dry, **plan.extra}


def write_plan(root: DataRoot, plan: CrawlPlan, dry: dict[str, dict], land=None) -> dict:
    """Write the plan table, its summary (written last) and its map; return the summary."""
    import io

    from geo_assets import mapviz

    buf = io.BytesIO()
    plan.table().write_parquet(buf)
    root.write_bytes(layout.CRAWL_PLAN, buf.getvalue())
    root.write_bytes(layout.CRAWL_PLAN_PNG, mapviz.budget_png(
        cells_bounds(plan.cells) if plan.cells else np.zeros((0, 4)), plan.images, land=land,
        title=f"Crawl plan: {len(plan.cells)} cells, {int(plan.images.sum())} images"))
    info = summary(plan, dry)
    root.write_bytes(layout.CRAWL_PLAN_SUMMARY, json.dumps(info, indent=1).encode())
    return info


def make_plan(root: DataRoot, crawl_cells: list[str], source, settings: PlanSettings, *,
              sources: list[str], images_per_cell: int,
              mapillary: MapillarySettings | None = None,
              streetview: StreetViewSettings | None = None, land_parts=None) -> dict:
    """Estimate coverage with ``source``, plan, dry-run and store the plan; its summary."""
    from geo_assets.land import cell_land

    land_of = (lambda cell: cell_land(land_parts, cell)) if land_parts is not None else None
    coverage = estimate_coverage(source, crawl_cells, settings, land_of=land_of)
    weights = load_weights(settings.weights_file, settings.weight_column) \
        if settings.policy == "weight" else None
    plan = build_plan(crawl_cells, coverage, settings, images_per_cell=images_per_cell,
                      weights=weights)
    dry = dry_run(plan, sources, mapillary=mapillary, streetview=streetview)
    return write_plan(root, plan, dry, land=land_parts)


def read_plan(root: DataRoot):
    """The stored plan table (polars), or None when no plan was made."""
    if not root.exists(layout.CRAWL_PLAN):
        return None
    import polars as pl

    with root.fs.open(root.path(layout.CRAWL_PLAN), "rb") as f:
        return pl.read_parquet(f)


def plan_budgets(root: DataRoot) -> dict[str, int] | None:
    """cell_id -> images the crawl lists there, from the stored plan (None: no plan)."""
    table = read_plan(root)
    if table is None:
        return None
    return dict(zip(table["cell_id"].to_list(), table["images"].to_list()))
