"""Resources: settings and API clients, configured per deployment in one place.

Secrets come only through ``dg.EnvVar`` and are read at launch, never at import.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from pydantic import Field

from geo_assets.storage import DataRoot

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def default_data_root() -> str:
    return os.environ.get("GEOSCOUT_DATA_ROOT", str(PROJECT_ROOT / ".geoscout" / "data"))


class GeoscoutSettings(dg.ConfigurableResource):
    """Deployment-wide settings: where data lives, which region, which grid."""

    data_root: str = Field(
        default_factory=default_data_root,
        description="Folder or fsspec URL (s3://bucket/prefix) that holds every output.",
    )
    # --- grid (issue: foundation) ---
    natural_earth_dir: str | None = Field(
        default=None,
        description="Folder with Natural Earth land/countries files (GeoJSON or shapefile). "
        "Unset: 'embedded' 1:110m data shipped with pyogrio for the demo, or a cached download.",
    )
    land_scale: str = Field(default="110m", description="Natural Earth scale: 110m, 50m or 10m.")
    region: str = Field(
        default="world",
        description="Region of interest: 'world', 'bbox:minlon,minlat,maxlon,maxlat', "
        "'countries:HRV,SVN' (ISO A3 or names) or 'geojson:/path/to/polygon.geojson'.",
    )
    include_antarctica: bool = Field(default=False, description="Keep Antarctica's cells.")
    grid_max_level: int = Field(default=6, description="Deepest grid level built.")
    crawl_level: int = Field(default=6, description="Level of the crawl cells (partitions).")
    coastal_buffer_km: float = Field(
        default=10.0, description="Cells within this distance of land count as land."
    )

    def root(self) -> DataRoot:
        return DataRoot(self.data_root)
