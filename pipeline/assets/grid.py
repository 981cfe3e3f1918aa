"""Grid assets: the region's land polygons and the land-filtered quadtree grid, with their
checks. Each asset writes its own files under the data root (``land/``, ``grid/``)."""


from dataclasses import replace

import dagster as dg
import numpy as np
import shapely

from geo_assets import grid as grid_lib
from geo_assets import land as land_lib
from geo_assets import layout, mapviz, plots
from geo_assets.errors import InputError
from geo_assets.naturalearth import NaturalEarthSource
from geo_assets.regions import Region, needs_countries, parse_region
from geo_assets.storage import sha256_hex
from pipeline import readable_metadata
from pipeline.resources import GeoscoutSettings, LocalFolderResource

MIN_LAND_SHARE = 0.5  # of the crawl cells, the share that must hold land (not only coast)


def natural_earth(settings: GeoscoutSettings) -> NaturalEarthSource:
    return NaturalEarthSource(settings.natural_earth_dir, cache=settings.root(),
                              base_url=settings.natural_earth_url)


def region_of(settings: GeoscoutSettings, source: NaturalEarthSource) -> Region:
    countries = (source.countries_for_region(settings.land_scale)
                 if needs_countries(settings.region) else None)
    margin = settings.coastal_buffer_km / land_lib.KM_PER_DEG
    return parse_region(settings.region, countries, settings.include_antarctica, margin)


def photo_points(settings: GeoscoutSettings, local_folder: LocalFolderResource):
    """(lat, lon) of the local folder's photos inside the region when local crawls are
    photo-driven (``settings.local_photo_cells``), else None."""
    if not (settings.local_photo_cells and "local" in settings.sources and local_folder.folder):
        return None
    from geo_assets.local_index import use_index

    with local_folder.open_source() as source:
        source.preflight()
        use_index(settings.root(), source)
        lat, lon = source.locations()
    region = region_of(settings, natural_earth(settings))
    inside = np.isfinite(lat) & np.isfinite(lon)
    inside[inside] = shapely.intersects_xy(region.geometry, lon[inside], lat[inside])
    return lat[inside], lon[inside]


def geometry_version(parts: np.ndarray) -> str:
    return sha256_hex(b"".join(shapely.to_wkb(parts, hex=False)))[:16]


@dg.asset(description="Natural Earth land polygons inside the region of interest "
          f"({layout.LAND_POLYGONS}).", kinds={"geopandas", "parquet"})
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
    png = mapviz.land_png(parts, region.bounds,
                          title=f"land polygons, {region.spec}, 1:{settings.land_scale}")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(settings.root().uri(layout.LAND_POLYGONS)),
            "source": land.attrs.get("source", ""),
            "scale": settings.land_scale,
            "region": region.spec,
            "n_polygons": len(parts),
            "preview": dg.MetadataValue.md(plots.png_markdown(png, "land polygons")),
        },
        data_version=dg.DataVersion(geometry_version(parts)),
    )


def counts_table(counts) -> dg.MetadataValue:
    columns = ["level", "land", "coastal", "dropped", "kept"]
    return dg.MetadataValue.table(
        records=[dg.TableRecord({c: int(row[c]) for c in columns})
                 for _, row in counts.iterrows()],
        schema=dg.TableSchema(columns=[dg.TableColumn(c, "int") for c in columns]))


@dg.asset(deps=[land_polygons], kinds={"geopandas", "parquet"},
          description="Land-filtered quadtree grid, levels 1..grid_max_level "
          f"({layout.GRID_CELLS}), with a PNG preview and an HTML map.")
def grid_cells(context: dg.AssetExecutionContext, settings: GeoscoutSettings,
               local_folder: LocalFolderResource) -> dg.MaterializeResult:
    max_level = grid_lib.check_grid_level(settings.grid_max_level)
    if not 1 <= settings.crawl_level <= max_level:
        raise InputError(f"crawl_level {settings.crawl_level} must lie in 1..grid_max_level "
                         f"({max_level})")
    root = settings.root()
    land = land_lib.load_land(root)
    result = grid_lib.build_grid(land, max_level, settings.coastal_buffer_km)
    points = photo_points(settings, local_folder)
    n_photo_cells = 0
    if points is not None:
        cells_with_photos, n_photo_cells = grid_lib.add_point_cells(result.cells, *points,
                                                                    max_level)
        result = replace(result, cells=cells_with_photos)
        context.log.info(f"grid: {n_photo_cells} cells added for local photos the land "
                         "data misses")
    path = grid_lib.write_grid(result.cells, root)
    counts = result.counts()
    level = mapviz.grid_map_level(counts, settings.crawl_level)
    png = mapviz.grid_png(result.cells, result.dropped, level, land)
    root.write_bytes(layout.GRID_PREVIEW, png)
    root.write_bytes(layout.GRID_MAP, mapviz.grid_map_html(result.cells, result.dropped, level))
    crawl = int((result.cells["level"] == settings.crawl_level).sum())
    context.log.info(f"grid: {len(result.cells)} cells, {crawl} crawl cells -> {path}")
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(root.uri(layout.GRID_CELLS)),
            "counts_per_level": counts_table(counts),
            "n_cells": len(result.cells),
            "n_crawl_cells": crawl,
            "crawl_level": settings.crawl_level,
            "coastal_buffer_km": settings.coastal_buffer_km,
            "photo_cells_added": n_photo_cells,
            "preview": dg.MetadataValue.md(plots.png_markdown(png, f"grid level {level}")),
            "map": dg.MetadataValue.path(root.uri(layout.GRID_MAP)),
            "map_link": readable_metadata.file_link(root.uri(layout.GRID_MAP)),
        },
        data_version=dg.DataVersion(sha256_hex(root.read_bytes(layout.GRID_CELLS))[:16]),
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
    crawl = grid[(grid["level"] == settings.crawl_level)
                 & (grid["status"] != grid_lib.PHOTOS)]  # the land data's cells only
    share = float((crawl["status"] == grid_lib.LAND).mean()) if len(crawl) else 0.0
    return dg.AssetCheckResult(
        passed=share >= MIN_LAND_SHARE, severity=dg.AssetCheckSeverity.WARN,
        metadata={"land_share": share, "n_crawl_cells": len(crawl),
                  "mean_land_fraction": float(crawl["land_fraction"].mean()) if len(crawl)
                  else 0.0})
