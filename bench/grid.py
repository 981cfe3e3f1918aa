"""Grid benchmark on real Natural Earth land (../shared/data/naturalearth).

1. Level-8 land grid (65,536 cells) on 1:50m land: the recursive vectorised build (levels
   1..8) against the naive loop, one shapely ``intersects`` per level-8 cell against the same
   land polygons, timed side by side in this run; both must find the same cells.
2. Level 10 (1,048,576 cells) on 1:10m land with the default 10 km coastal buffer: the full
   ``build_grid`` (GeoDataFrame of every level included).

Run: ``.venv/bin/python bench/grid.py`` (``--only speedup`` / ``--only level10``). Each
benchmark ends with ``RESULT <name> <figure>=<value> target=<value>``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import shapely

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from geo_assets import cells, grid, land, regions
from geo_assets.naturalearth import NaturalEarthSource

DATA = PROJECT_ROOT.parent / "shared" / "data" / "naturalearth"


def naive_level(parts: np.ndarray, level: int) -> set[str]:
    """One ``intersects`` per cell of the level against the land multipolygon."""
    land_geom = shapely.MultiPolygon(list(parts))
    ids = cells.all_cells(level)
    bounds = cells.cells_bounds(ids)
    return {cell_id for cell_id, b in zip(ids, bounds)
            if land_geom.intersects(shapely.box(*b))}


def bench_speedup(source: NaturalEarthSource) -> None:
    parts = land.clip_to_region(land.land_parts(source.land("50m")), regions.world())
    start = time.perf_counter()
    levels = grid.build_levels(parts, 8)
    fast_s = time.perf_counter() - start
    last = levels[-1]
    fast = set(cells.rowcol_to_ids(8, last.rows, last.cols).tolist())
    start = time.perf_counter()
    naive = naive_level(parts, 8)
    naive_s = time.perf_counter() - start
    speedup = naive_s / fast_s
    print(f"1:50m land, world without Antarctica, {len(parts)} polygons")
    print(f"recursive build, levels 1-8: {fast_s:.3f} s, {len(fast)} land cells at level 8")
    print(f"naive intersects loop, 65,536 level-8 cells: {naive_s:.2f} s, {len(naive)} land cells")
    print(f"same cells: {fast == naive} (differ: {len(fast ^ naive)})")
    if fast != naive:  # the grid counts land by shared area; intersects also counts touching
        land_geom = shapely.MultiPolygon(list(parts))
        areas = [land_geom.intersection(shapely.box(*cells.cell_bounds(c))).area
                 for c in sorted(fast ^ naive)]
        print(f"cells that differ: {sorted(fast ^ naive)}, land area in them: {areas} "
              "(they touch land at a point or edge only)")
    print(f"RESULT grid_l8_50m_speedup speedup={speedup:.1f}x target=50x")


def bench_level10(source: NaturalEarthSource) -> None:
    start = time.perf_counter()
    land_10m = source.land("10m")
    read_s = time.perf_counter() - start
    start = time.perf_counter()
    result = grid.build_grid(land_10m, 10, coastal_buffer_km=10.0, region=regions.world())
    build_s = time.perf_counter() - start
    counts = result.counts().set_index("level")
    print(f"1:10m land ({len(land_10m)} polygons) read in {read_s:.2f} s")
    print(counts.to_string())
    print(f"build_grid levels 1-10, 10 km coastal buffer: {build_s:.2f} s, "
          f"{len(result.cells)} cells in all")
    print(f"RESULT grid_l10_10m_build seconds={build_s:.2f} target=20")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["speedup", "level10"], help="run one benchmark")
    args = parser.parse_args(argv)
    if not DATA.is_dir():
        print(f"bench/grid.py: Natural Earth test data not found at {DATA} "
              "(../shared/data/naturalearth from the project root); nothing to measure",
              file=sys.stderr)
        return 2
    source = NaturalEarthSource(str(DATA))
    if args.only in (None, "speedup"):
        bench_speedup(source)
    if args.only in (None, "level10"):
        bench_level10(source)
    return 0


if __name__ == "__main__":
    sys.exit(main())
