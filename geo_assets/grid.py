"""The land-filtered recursive quadtree grid.

Level 1 is the four quadrants of the world; each following level splits only the cells that
survived the previous one. A cell survives when it shares land (positive area) with the
region's land polygons, or, with a coastal buffer, when such land lies within the buffer
(see ``geo_assets.land``): status ``land`` or ``coastal``; the rest are ``dropped``.

Speed comes from carrying the land down the tree: each surviving cell keeps its land clipped
to itself, so a level's clipping work is proportional to the coastline inside the previous
level's cells, not to the whole land polygon; cells entirely covered by land ("interior")
keep no geometry at all, and their children are land without any geometry work.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from geo_assets import cells, layout
from geo_assets.errors import InputError
from geo_assets.land import (
    LandIndex,
    box_geoms,
    boxes_area_km2,
    clip_pairs,
    clip_to_region,
    land_parts,
    read_geoparquet,
    write_geoparquet,
)
from geo_assets.regions import Region
from geo_assets.storage import DataRoot

LAND, COASTAL, DROPPED = "land", "coastal", "dropped"
PHOTOS = "photos"  # kept because photos lie there (a local folder), whatever the land data says
COLUMNS = ["cell_id", "level", "min_lon", "min_lat", "max_lon", "max_lat", "land_fraction",
           "area_km2", "status", "geometry"]
INTERIOR_FRACTION = 1.0 - 1e-9  # a cell this full of land is treated as wholly land
CHILD_DROW = np.array([0, 0, 1, 1])  # digit = 2 * north + east
CHILD_DCOL = np.array([0, 1, 0, 1])


@dataclass
class LevelCells:
    """The surviving cells of one level, plus the land clipped to the partial ones."""

    level: int
    rows: np.ndarray
    cols: np.ndarray
    fraction: np.ndarray
    coastal: np.ndarray  # bool: survived through the buffer only
    piece_owner: np.ndarray  # index into rows/cols of each land piece
    pieces: np.ndarray  # land polygons clipped to their owner cell
    dropped_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    dropped_cols: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def interior(self) -> np.ndarray:
        return self.fraction >= INTERIOR_FRACTION

    def bounds(self, rows=None, cols=None) -> np.ndarray:
        return rowcol_bounds(self.level, self.rows if rows is None else rows,
                             self.cols if cols is None else cols)


def rowcol_bounds(level: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    dlat, dlon = cells.cell_size_deg(level)
    return np.stack([-180.0 + cols * dlon, -90.0 + rows * dlat,
                     -180.0 + (cols + 1) * dlon, -90.0 + (rows + 1) * dlat], axis=1)


def world_cell(parts: np.ndarray) -> LevelCells:
    """Level 0: the world, holding every land part."""
    one = np.zeros(1, np.int64)
    return LevelCells(0, one, one, np.array([0.5]), np.zeros(1, bool),
                      np.zeros(len(parts), np.int64), parts)


def clip_children(parent: LevelCells) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each parent piece clipped to the parent's 4 children.

    Returns (child index = 4 * parent + digit, clipped piece, its area), pieces with land only.
    """
    level = parent.level + 1
    owner = np.repeat(parent.piece_owner, 4)
    digit = np.tile(np.arange(4), len(parent.pieces))
    src = np.repeat(np.arange(len(parent.pieces)), 4)
    box = rowcol_bounds(level, 2 * parent.rows[owner] + CHILD_DROW[digit],
                        2 * parent.cols[owner] + CHILD_DCOL[digit])
    pb = shapely.bounds(parent.pieces)[src]
    overlap = ((pb[:, 0] < box[:, 2]) & (pb[:, 2] > box[:, 0])
               & (pb[:, 1] < box[:, 3]) & (pb[:, 3] > box[:, 1]))
    child = 4 * owner[overlap] + digit[overlap]
    clipped = clip_pairs(parent.pieces[src[overlap]], box[overlap])
    area = shapely.area(clipped)
    keep = area > 0
    return child[keep], clipped[keep], area[keep]


def next_level(parent: LevelCells, buffer_km: float) -> LevelCells:
    """Split every surviving cell of ``parent`` into 4 and keep the children with land."""
    level = parent.level + 1
    rows = (2 * parent.rows[:, None] + CHILD_DROW).ravel()
    cols = (2 * parent.cols[:, None] + CHILD_DCOL).ravel()
    bounds = rowcol_bounds(level, rows, cols)
    child, pieces, area = clip_children(parent)
    box_area = (bounds[:, 2] - bounds[:, 0]) * (bounds[:, 3] - bounds[:, 1])
    fraction = np.minimum(np.bincount(child, weights=area, minlength=len(rows)) / box_area, 1)
    fraction[np.repeat(parent.interior, 4)] = 1.0
    is_land = fraction > 0
    interior = fraction >= INTERIOR_FRACTION
    keep_piece = ~interior[child]
    child, pieces = child[keep_piece], pieces[keep_piece]
    coastal = np.zeros(len(rows), bool)
    if buffer_km > 0 and not is_land.all():
        land_index = LandIndex(np.concatenate([pieces, box_geoms(bounds[interior])]))
        sea = np.flatnonzero(~is_land)
        coastal[sea] = land_index.near(bounds[sea], buffer_km)
    survive = is_land | coastal
    new_index = np.cumsum(survive) - 1
    return LevelCells(level, rows[survive], cols[survive], fraction[survive], coastal[survive],
                      new_index[child], pieces, rows[~survive], cols[~survive])


@dataclass(frozen=True)
class GridResult:
    """``cells``: every surviving cell of every level (GeoDataFrame, ``COLUMNS``);
    ``dropped``: the cells tested and dropped (``cell_id``, ``level``)."""

    cells: gpd.GeoDataFrame
    dropped: pd.DataFrame
    max_level: int

    def counts(self) -> pd.DataFrame:
        """Per level: land, coastal, dropped and kept (land + coastal) cell counts."""
        kept = self.cells.groupby(["level", "status"]).size().unstack(fill_value=0)
        table = pd.DataFrame(index=pd.RangeIndex(1, self.max_level + 1, name="level"))
        for status in (LAND, COASTAL):
            table[status] = kept.get(status, 0)
        table[DROPPED] = self.dropped.groupby("level").size()
        table = table.fillna(0).astype(int)
        table["kept"] = table[LAND] + table[COASTAL]
        return table.reset_index()


def check_grid_level(level: int, name: str = "grid_max_level") -> int:
    try:
        level = cells.check_level(level)
    except InputError as exc:
        raise InputError(f"{name}: {exc}") from None
    if level < 1:
        raise InputError(f"{name} {level} is out of range: the grid starts at level 1")
    return level


def build_levels(land, max_level: int, coastal_buffer_km: float = 0.0,
                 region: Region | None = None) -> list[LevelCells]:
    """The raw per-level arrays (levels 1..max_level); see ``build_grid``."""
    check_grid_level(max_level)
    if coastal_buffer_km < 0 or not np.isfinite(coastal_buffer_km):
        raise InputError(f"coastal_buffer_km {coastal_buffer_km} must be 0 or more")
    parts = clip_to_region(land_parts(land), region)
    levels = [world_cell(parts)]
    for _ in range(max_level):
        levels.append(next_level(levels[-1], coastal_buffer_km))
    return levels[1:]


def build_grid(land, max_level: int, coastal_buffer_km: float = 0.0,
               region: Region | None = None) -> GridResult:
    """Land-filtered quadtree grid, levels 1..max_level.

    ``land``: land polygons (GeoDataFrame, GeoSeries or geometry array, lon/lat degrees);
    ``region``: only land inside it counts (None: all of it, Antarctica included).
    """
    levels = build_levels(land, max_level, coastal_buffer_km, region)
    frames = [level_frame(lv) for lv in levels]
    dropped = pd.concat([pd.DataFrame({
        "cell_id": cells.rowcol_to_ids(lv.level, lv.dropped_rows, lv.dropped_cols),
        "level": np.full(len(lv.dropped_rows), lv.level, dtype=np.int16)}) for lv in levels],
        ignore_index=True)
    grid = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), geometry="geometry", crs=4326)
    return GridResult(grid, dropped, max_level)


def add_point_cells(grid: gpd.GeoDataFrame, lat, lon, max_level: int
                    ) -> tuple[gpd.GeoDataFrame, int]:
    """The grid plus, at every level 1..max_level, each cell that holds one of the points
    and is not in it yet (status ``photos``, land fraction 0): a local folder's photos on a
    small island or a boat that the land data misses are crawled, not lost. Rows stay in
    (level, cell id) order; the number of cells added."""
    lat, lon = np.asarray(lat, np.float64), np.asarray(lon, np.float64)
    ok = np.isfinite(lat) & np.isfinite(lon)
    known = set(grid["cell_id"])
    frames = []
    for level in range(1, max_level + 1):
        ids = sorted(set(cells.points_to_cells(lat[ok], lon[ok], level).tolist()) - known)
        if not ids:
            continue
        _, rows, cols = cells.ids_to_rowcol(ids)
        lv = LevelCells(level, rows, cols, np.zeros(len(ids)), np.zeros(len(ids), bool),
                        np.zeros(0, np.int64), np.zeros(0, object))
        frame = level_frame(lv)
        frames.append(frame.assign(status=PHOTOS))
    if not frames:
        return grid, 0
    out = pd.concat([pd.DataFrame(grid), *frames], ignore_index=True)
    out = out.sort_values(["level", "cell_id"], kind="stable", ignore_index=True)
    return gpd.GeoDataFrame(out, geometry="geometry", crs=4326), sum(map(len, frames))


def level_frame(lv: LevelCells) -> pd.DataFrame:
    """The contract columns for one level, rows in cell-id order."""
    order = np.argsort(morton(lv.rows, lv.cols, lv.level), kind="stable")
    rows, cols = lv.rows[order], lv.cols[order]
    bounds = lv.bounds(rows, cols)
    return pd.DataFrame({
        "cell_id": cells.rowcol_to_ids(lv.level, rows, cols),
        "level": np.full(len(rows), lv.level, dtype=np.int16),
        "min_lon": bounds[:, 0], "min_lat": bounds[:, 1],
        "max_lon": bounds[:, 2], "max_lat": bounds[:, 3],
        "land_fraction": lv.fraction[order],
        "area_km2": boxes_area_km2(bounds),
        "status": np.where(lv.coastal[order], COASTAL, LAND).astype(object),
        "geometry": box_geoms(bounds),
    })


def morton(rows: np.ndarray, cols: np.ndarray, level: int) -> np.ndarray:
    """Integer whose order is the order of the cell ids (row bit above column bit)."""
    code = np.zeros(len(rows), dtype=np.int64)
    for bit in range(level - 1, -1, -1):
        code = (code << 2) | (((rows >> bit) & 1) << 1) | ((cols >> bit) & 1)
    return code


# --- storage --------------------------------------------------------------------------------

def write_grid(grid: gpd.GeoDataFrame, root: DataRoot) -> str:
    """Write the grid as GeoParquet to ``layout.GRID_CELLS`` atomically."""
    return write_geoparquet(grid, root, layout.GRID_CELLS)


def load_grid(root: DataRoot) -> gpd.GeoDataFrame:
    """The grid written by the ``grid_cells`` asset."""
    return read_geoparquet(root, layout.GRID_CELLS, "grid", "grid_cells")


def crawl_cells(grid: pd.DataFrame, level: int) -> list[str]:
    """Sorted ids of the grid's cells at ``level`` (land and coastal)."""
    check_grid_level(level, "crawl_level")
    levels = grid["level"].to_numpy()
    if not (levels == level).any():
        raise InputError(f"crawl_level {level} is not in the grid (levels "
                         f"{int(levels.min())}..{int(levels.max())}): raise grid_max_level")
    return sorted(grid["cell_id"].to_numpy()[levels == level].tolist())
