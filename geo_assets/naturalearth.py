"""Natural Earth land and country polygons: local files, a cached download, or the
embedded 1:110m countries that ship inside the pyogrio wheel (the offline demo default).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import geopandas as gpd

from geo_assets.errors import DataUnavailableError


def embedded_countries_path() -> Path:
    """Natural Earth 1:110m admin-0 countries shipped in pyogrio's wheel (public domain)."""
    import pyogrio

    path = Path(pyogrio.__file__).parent / "tests" / "fixtures" / "naturalearth_lowres"
    shp = path / "naturalearth_lowres.shp"
    if not shp.exists():
        raise DataUnavailableError(
            f"embedded Natural Earth countries not found at {shp}; set natural_earth_dir "
            "to a folder with Natural Earth files")
    return shp


@lru_cache(maxsize=4)
def embedded_countries() -> gpd.GeoDataFrame:
    """Columns: iso_a3, name, continent, geometry (EPSG:4326)."""
    gdf = gpd.read_file(embedded_countries_path())
    gdf = gdf.rename(columns={c: c.lower() for c in gdf.columns})
    return gdf[["iso_a3", "name", "continent", "geometry"]].to_crs(4326)
