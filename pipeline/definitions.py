"""Assembles the geoscout Dagster definitions; no logic lives here.

Settings come from the settings file (``$GEOSCOUT_CONFIG`` or ``./geoscout.yaml``,
pipeline/config_file.py) when there is one; otherwise one switch, the deployment
(``GEOSCOUT_DEPLOYMENT``, default ``demo``), picks the resource dict. ``demo`` crawls the
built-in demo world on loopback with no keys; ``production`` reads secrets from environment
variables through ``dg.EnvVar`` when a run starts. The dataset levels of the settings give
the ``dataset_level_<L>`` assets.
"""

from __future__ import annotations

import os

import dagster as dg

from pipeline import config_file, constants, jobs, platforms, schedules, sensors
from pipeline.assets import dataset, evaluate, grid, ingest, plan, train, tuning
from pipeline.profiles import DEMO_PRESET, DEMO_SEED, demo_profile
from pipeline.resources import build_resources

# Stage modules and their groups, in graph order.
STAGES = [(grid, constants.GRID), (plan, constants.GRID), (ingest, constants.INGEST),
          (dataset, constants.DATASET), (train, constants.TRAIN), (tuning, constants.TUNE),
          (evaluate, constants.EVAL)]


def demo_resources(seed: int = DEMO_SEED, preset: str = DEMO_PRESET,
                   data_root: str | None = None) -> dict[str, object]:
    """The demo profile's resources (pipeline/profiles.py)."""
    profile = demo_profile(seed, preset)
    if data_root:
        profile["settings"] = {**profile["settings"], "data_root": data_root}
    return build_resources(profile)


def production_resources() -> dict[str, object]:
    """Real APIs. Enabled sources (``GEOSCOUT_SOURCES``, default ``mapillary``) need their
    secrets in the environment: MAPILLARY_TOKEN; GOOGLE_MAPS_API_KEY (Street View, which
    also needs GEOSCOUT_STREETVIEW_ACKNOWLEDGED=1 to store images); GEOSCOUT_LOCAL_FOLDER."""
    sources = [s.strip() for s in os.environ.get("GEOSCOUT_SOURCES", "mapillary").split(",")
               if s.strip()]
    return build_resources({
        "settings": {"sources": sources},
        "mapillary": {"access_token": dg.EnvVar("MAPILLARY_TOKEN")
                      if "mapillary" in sources else None},
        "streetview": {
            "api_key": dg.EnvVar("GOOGLE_MAPS_API_KEY") if "streetview" in sources else None,
            "signing_secret": dg.EnvVar("GOOGLE_MAPS_SIGNING_SECRET") if "streetview" in sources
            and os.environ.get("GOOGLE_MAPS_SIGNING_SECRET") else None,
            "store_images_acknowledged":
                os.environ.get("GEOSCOUT_STREETVIEW_ACKNOWLEDGED") == "1"},
        "local_folder": {"folder": os.environ.get("GEOSCOUT_LOCAL_FOLDER")},
    })


RESOURCES_BY_DEPLOYMENT = {"demo": demo_resources, "production": production_resources}


def default_resources(deployment: str | None = None) -> dict[str, object]:
    """The settings file's resources if there is one (and no deployment is named), else the
    deployment's (``GEOSCOUT_DEPLOYMENT``, default ``demo``)."""
    path = None if deployment else config_file.config_path()
    if path is not None:
        return config_file.file_resources(path)
    deployment = deployment or os.environ.get("GEOSCOUT_DEPLOYMENT", "demo")
    if deployment not in RESOURCES_BY_DEPLOYMENT:
        raise ValueError(f"GEOSCOUT_DEPLOYMENT={deployment!r} is not one of "
                         f"{sorted(RESOURCES_BY_DEPLOYMENT)}")
    return RESOURCES_BY_DEPLOYMENT[deployment]()


def crawls_real_api(resources: dict[str, object]) -> bool:
    """Whether a crawl with these resources would call a real (non-demo) API."""
    sources = set(resources["settings"].sources)
    return any(name in sources and resources[name].demo_seed is None
               for name in ("mapillary", "streetview"))


def build_definitions(deployment: str | None = None,
                      resources: dict[str, object] | None = None) -> dg.Definitions:
    if resources is None:
        resources = default_resources(deployment)
    cell_keys = [a.key for a in ingest.CELL_ASSETS]
    assets = [_stage_asset(a, group, cell_keys) for module, group in STAGES
              for a in dg.load_assets_from_modules([module], group_name=group)]
    assets += [_stage_asset(a.map_asset_specs(
        lambda spec: spec.replace_attributes(group_name=constants.DATASET)),
        constants.DATASET, cell_keys) for a in dataset.dataset_assets(resources["dataset"].levels)]
    training_job = jobs.training_job()
    # Sensors that would crawl real APIs start stopped: an operator turns them on.
    status = (dg.DefaultSensorStatus.STOPPED if crawls_real_api(resources)
              else dg.DefaultSensorStatus.RUNNING)
    return dg.Definitions(
        assets=assets,
        asset_checks=dg.load_asset_checks_from_modules([m for m, _ in STAGES]),
        jobs=[jobs.grid_job, jobs.ingest_cells_job, jobs.dataset_job, training_job],
        schedules=[schedules.make_grid_refresh_schedule(jobs.grid_job),
                   schedules.make_training_schedule(training_job)],
        sensors=[
            sensors.make_crawl_cells_sensor(jobs.ingest_cells_job, cell_keys,
                                            default_status=status),
            sensors.make_automation_sensor(cell_keys, default_status=status),
        ],
        resources=resources,
    )


def _stage_asset(assets_def: dg.AssetsDefinition, group: str,
                 cell_keys: list[dg.AssetKey]) -> dg.AssetsDefinition:
    """Per-cell ingestion is requested only by the crawl-cells sensor (one crawl request per
    cell at a time), so it has no automation condition; datasets follow the manifest."""
    if assets_def.key in cell_keys:
        return assets_def.map_asset_specs(
            lambda spec: spec.replace_attributes(automation_condition=None))
    return _refresh_datasets(assets_def) if group == constants.DATASET else assets_def


def _refresh_datasets(assets_def: dg.AssetsDefinition) -> dg.AssetsDefinition:
    """Datasets follow the manifest: eager() wherever the stage set no condition itself."""
    return assets_def.map_asset_specs(
        lambda spec: spec if spec.automation_condition else spec.replace_attributes(
            automation_condition=dg.AutomationCondition.eager()))


defs = platforms.for_platform(build_definitions())
