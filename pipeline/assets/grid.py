"""Grid assets: the region's land polygons and the land-filtered quadtree grid, with their
checks. Each asset writes its own files under the data root (``land/``, ``grid/``)."""


import hashlib

import dagster as dg
import geopandas as gpd
import numpy as np
import shapely

from geo_assets import grid as grid_lib
from geo_assets import land as land_lib
from geo_assets import mapviz
from geo_assets.cells import cells_bounds
from geo_assets.errors import InputError
from geo_assets.naturalearth import NaturalEarthSource
from geo_assets.regions import Region, needs_countries, parse_region
from pipeline.resources import GeoscoutSettings

MAP_MAX_CELLS = 20_000  # cells drawn on the HTML map / PNG preview (deepest level that fits)
MAP_RELPATH = "grid/grid_map.html"
PREVIEW_RELPATH = "grid/grid_preview.png"
MIN_LAND_SHARE = 0.5  # of the crawl cells, the share that must hold land (not only coast)


def natural_earth(settings: GeoscoutSettings) -> NaturalEarthSource:
    return NaturalEarthSource(settings.natural_earth_dir, cache=settings.root(),
                              base_url=settings.natural_earth_url)


def region_of(settings: GeoscoutSettings, source: NaturalEarthSource) -> Region:
    countries = (source.countries_for_region(settings.land_scale)
                 if needs_countries(settings.region) else None)
    margin = settings.coastal_buffer_km / land_lib.KM_PER_DEG
    return parse_region(settings.region, countries, settings.include_antarctica, margin)


def geometry_version(parts: np.ndarray) -> str:
    return hashlib.sha256(b"".join(shapely.to_wkb(parts, hex=False))).hexdigest()[:16]


@dg.asset(description="Natural Earth land polygons inside the region of interest "
          "(land/land_polygons.parquet).", kinds={"geopandas", "parquet"})
def land_polygons(context: dg.AssetExecutionContext,
                  settings: GeoscoutSettings) -> dg.MaterializeResult:
    source = natural_earth(settings)
    land = source.land(settings.land_scale)
    region = region_of(settings, source)
    parts = land_lib.clip_to_region(land_lib.land_parts(land), region)
    if not len(parts):
        raise InputError(f"region {settings.region!r} holds no land at {settings.land_scale}")
    path = land_lib.write_land(parts, settings.root())
    context.log.info(f"{len(parts)} land polygons from {land.attrs.get('source')} -> {path}")
    png = mapviz.boxes_png(np.zeros((0, 4)), [], land=parts,
                           title=f"land polygons, {region.spec}, 1:{settings.land_scale}",
                           extent=mapviz.extent_of([region.bounds]))
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(settings.root().uri(land_lib.LAND_RELPATH)),
            "source": land.attrs.get("source", ""),
            "scale": settings.land_scale,
            "region": region.spec,
            "n_polygons": len(parts),
            "preview": dg.MetadataValue.md(mapviz.png_markdown(png, "land polygons")),
        },
        data_version=dg.DataVersion(geometry_version(parts)),
    )


def map_level(counts, crawl_level: int) -> int:
    """The crawl level when its cells (kept and dropped) fit on a map, else the deepest that does."""
    total = dict(zip(counts["level"], counts["kept"] + counts["dropped"]))
    fitting = [lv for lv, n in total.items() if n <= MAP_MAX_CELLS] or [1]
    return crawl_level if crawl_level in fitting else max(fitting)


def grid_maps(result: grid_lib.GridResult, level: int, land: gpd.GeoDataFrame):
    """(PNG bytes, folium map) of one level's cells coloured by status."""
    cells = result.cells[result.cells["level"] == level]
    dropped = result.dropped[result.dropped["level"] == level]
    ids = np.concatenate([cells["cell_id"].to_numpy(), dropped["cell_id"].to_numpy()])
    status = np.concatenate([cells["status"].to_numpy(),
                             np.full(len(dropped), grid_lib.DROPPED, dtype=object)])
    fraction = np.concatenate([cells["land_fraction"].to_numpy(), np.zeros(len(dropped))])
    bounds = cells_bounds(ids) if len(ids) else np.zeros((0, 4))
    colours = [mapviz.STATUS_COLOURS[s] for s in status]
    title = f"grid level {level}: {len(cells)} cells kept, {len(dropped)} dropped"
    png = mapviz.boxes_png(bounds, colours, land=land, title=title,
                           legend=mapviz.STATUS_COLOURS, extent=mapviz.extent_of(bounds))
    tips = [f"{i} {s} land {f:.0%}" for i, s, f in zip(ids, status, fraction)]
    fmap = mapviz.boxes_map(bounds, colours, tooltips=tips, title=title,
                            legend=mapviz.STATUS_COLOURS)
    return png, fmap


def counts_table(counts) -> dg.MetadataValue:
    columns = ["level", "land", "coastal", "dropped", "kept"]
    return dg.MetadataValue.table(
        records=[dg.TableRecord({c: int(row[c]) for c in columns})
                 for _, row in counts.iterrows()],
        schema=dg.TableSchema(columns=[dg.TableColumn(c, "int") for c in columns]))


@dg.asset(deps=[land_polygons], kinds={"geopandas", "parquet"},
          description="Land-filtered quadtree grid, levels 1..grid_max_level "
          "(grid/grid_cells.parquet), with a PNG preview and an HTML map.")
def grid_cells(context: dg.AssetExecutionContext,
               settings: GeoscoutSettings) -> dg.MaterializeResult:
    max_level = grid_lib.check_grid_level(settings.grid_max_level)
    if not 1 <= settings.crawl_level <= max_level:
        raise InputError(f"crawl_level {settings.crawl_level} must lie in 1..grid_max_level "
                         f"({max_level})")
    root = settings.root()
    land = land_lib.load_land(root)
    result = grid_lib.build_grid(land, max_level, settings.coastal_buffer_km)
    path = grid_lib.write_grid(result.cells, root)
    counts = result.counts()
    level = map_level(counts, settings.crawl_level)
    png, fmap = grid_maps(result, level, land)
    root.write_bytes(PREVIEW_RELPATH, png)
    root.write_bytes(MAP_RELPATH, mapviz.map_html(fmap))
    crawl = int((result.cells["level"] == settings.crawl_level).sum())
    context.log.info(f"grid: {len(result.cells)} cells, {crawl} crawl cells -> {path}")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(root.uri(grid_lib.GRID_RELPATH)),
            "counts_per_level": counts_table(counts),
            "n_cells": len(result.cells),
            "n_crawl_cells": crawl,
            "crawl_level": settings.crawl_level,
            "coastal_buffer_km": settings.coastal_buffer_km,
            "preview": dg.MetadataValue.md(mapviz.png_markdown(png, f"grid level {level}")),
            "map": dg.MetadataValue.path(root.uri(MAP_RELPATH)),
        },
        data_version=dg.DataVersion(hashlib.sha256(root.read_bytes(grid_lib.GRID_RELPATH))
                                    .hexdigest()[:16]),
    )


@dg.asset_check(asset=land_polygons, description="Land polygons are valid lon/lat polygons.")
def land_polygons_valid(settings: GeoscoutSettings) -> dg.AssetCheckResult:
    parts = land_lib.load_land(settings.root()).geometry.values
    invalid = int((~shapely.is_valid(parts)).sum())
    min_lon, min_lat, max_lon, max_lat = shapely.total_bounds(parts)
    in_range = min_lon >= -180 and max_lon <= 180 and min_lat >= -90 and max_lat <= 90
    return dg.AssetCheckResult(
        passed=bool(len(parts) and in_range and invalid == 0),
        metadata={"n_polygons": len(parts), "n_invalid": invalid,
                  "bounds": [float(min_lon), float(min_lat), float(max_lon), float(max_lat)]})


@dg.asset_check(asset=grid_cells, description="Every level is present and every cell's "
                "parent is in the grid (the quadtree is complete).")
def grid_cells_nested(settings: GeoscoutSettings) -> dg.AssetCheckResult:
    grid = grid_lib.load_grid(settings.root())
    ids = set(grid["cell_id"])
    orphans = sum(1 for c in ids if len(c) > 1 and c[:-1] not in ids)
    levels = sorted(set(grid["level"].tolist()))
    expected = list(range(1, settings.grid_max_level + 1))
    return dg.AssetCheckResult(
        passed=orphans == 0 and levels == expected,
        metadata={"orphans": orphans, "levels": levels, "expected_levels": expected})


@dg.asset_check(asset=grid_cells, description=f"At least {MIN_LAND_SHARE:.0%} of the crawl "
                "cells hold land (the rest survive through the coastal buffer).")
def grid_cells_land_ratio(settings: GeoscoutSettings) -> dg.AssetCheckResult:
    grid = grid_lib.load_grid(settings.root())
    crawl = grid[grid["level"] == settings.crawl_level]
    share = float((crawl["status"] == grid_lib.LAND).mean()) if len(crawl) else 0.0
    return dg.AssetCheckResult(
        passed=share >= MIN_LAND_SHARE, severity=dg.AssetCheckSeverity.WARN,
        metadata={"land_share": share, "n_crawl_cells": len(crawl),
                  "mean_land_fraction": float(crawl["land_fraction"].mean()) if len(crawl)
                  else 0.0})
