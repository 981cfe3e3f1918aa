"""``geoscout init``: write a commented starter settings file (``geoscout.yaml``).

Every key is a field of a resource (``pipeline/resources.py``); the file is checked with
``pipeline.config_file.load_overrides`` right after it is written.
"""

from __future__ import annotations

from pathlib import Path

from geo_assets.errors import InputError

HEADER = """\
# geoscout settings. Top-level keys are the resources: settings, mapillary, streetview,
# local_folder, dataset, training; each holds that resource's fields (see the Dagster UI's
# resource pages or docs/architecture.md for every field and its description).
# Secrets are never written here: write {env: VARIABLE} and export the variable.
# Check this file: geoscout status
"""

DATASET_TRAINING = """\
dataset:
  levels: [1, 2, 3]          # hierarchy levels (quadtree depths), coarsest first;
                             # one dataset_level_<L> asset per level
  min_images: 5              # a class needs at least this many training images
  test_fraction: 0.1         # share of images held out as the test split
  min_distance_km: 1.0       # no test image within this distance of a train image
training:
  run_name: mymodel          # models/<run_name>-<run id>/ under the data root
  backbone: tiny             # tiny, resnet18..152, efficientnet_lite0
  pretrained: false
  image_size: 64
  epochs: 5
  device: auto               # auto, cpu or cuda
"""

def filter_lines() -> str:
    """The filter settings as commented ``settings`` lines, each with its default and
    description from ``FilterSettings`` (written there once)."""
    import dataclasses

    from geo_assets.settings import FilterSettings

    lines = ["  # filters: uncomment to change (every dropped photo keeps its drop_reason)"]
    for f in dataclasses.fields(FilterSettings):
        text = f.metadata["description"].split(". ")[0].rstrip(".")
        lines.append(f"  # {f'filter_{f.name}: {f.default}':<35} # {text}")
    return "\n".join(lines) + "\n"


PRESETS: dict[str, str] = {
    "demo": """\
profile: demo                # the built-in demo world on loopback: no keys, no network
settings:
  data_root: .geoscout/demo-data
""",
    "local": """\
settings:
  data_root: .geoscout/photos-data  # every output goes here (a folder or s3://...);
                             # apart from the demo's .geoscout/data
  region: world              # world | bbox:minlon,minlat,maxlon,maxlat | countries:HRV,SVN
  sources: [local]
  grid_max_level: 3
  crawl_level: 2             # crawl cells (partitions) at this quadtree level
  # local_photo_cells: true  # (default) also crawl every cell that holds a photo: small
                             # islands, coasts, boats that the land data misses
""" + filter_lines() + """\
local_folder:
  folder: photos             # your photos (JPEG); EXIF GPS or the sidecar below
  # sidecar: photos.csv      # CSV or Parquet: file,lat,lon[,group]
  license: CC-BY-4.0
  attribution: me
""" + DATASET_TRAINING,
    "mapillary": """\
settings:
  data_root: .geoscout/mapillary-data
  region: countries:HRV      # ISO A3 codes or names, or a bbox / geojson
  sources: [mapillary]
  grid_max_level: 6
  crawl_level: 6
  images_per_cell: 300
mapillary:
  access_token: {env: MAPILLARY_TOKEN}   # export MAPILLARY_TOKEN=MLY|...
  requests_per_s: 5
""" + DATASET_TRAINING,
    "streetview": """\
settings:
  data_root: .geoscout/streetview-data
  region: countries:HRV
  sources: [streetview]
  grid_max_level: 6
  crawl_level: 6
streetview:
  api_key: {env: GOOGLE_MAPS_API_KEY}
  signing_secret: {env: GOOGLE_MAPS_SIGNING_SECRET}
  # Google's terms forbid storing Street View images without a separate agreement:
  store_images_acknowledged: false
""" + DATASET_TRAINING,
}


def write_starter(path: Path, preset: str, force: bool = False) -> Path:
    """Write the ``preset`` starter file to ``path`` and check that it loads."""
    from pipeline.config_file import load_overrides

    if preset not in PRESETS:
        raise InputError(f"preset {preset!r} is not one of {', '.join(sorted(PRESETS))}")
    if path.exists() and not force:
        raise InputError(f"{path} exists: pass --force to overwrite it")
    path.write_text(HEADER + PRESETS[preset])
    load_overrides(path)
    return path
