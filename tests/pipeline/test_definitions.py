"""The definitions load, and the graph, jobs, schedules and sensors are the ones we expect."""

from __future__ import annotations

import dagster as dg
import pytest

from pipeline import constants
from pipeline.definitions import build_definitions, defs
from pipeline.partitions import crawl_cells

CELL_ASSETS = ["local_images", "mapillary_images", "streetview_images"]

# Every asset key of the graph, sorted: an accidental rename or a dropped asset fails here.
EXPECTED_ASSET_KEYS = sorted([
    "grid_cells", "land_polygons", "crawl_plan",
    *CELL_ASSETS, "image_manifest",
    "splits", "hierarchy", "shards",
    "dataset_level_1", "dataset_level_3", "dataset_level_5", "dataset_level_8",
    "trained_model", "evaluation_report", "hyperparameter_study",
])


def test_definitions_load():
    dg.Definitions.validate_loadable(defs)


def test_asset_keys_snapshot():
    keys = sorted(k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys())
    assert keys == EXPECTED_ASSET_KEYS


def test_named_jobs_schedules_sensors():
    for name in ("grid_job", "ingest_cells_job", "dataset_job", "training_job"):
        assert defs.resolve_job_def(name).name == name
    for name in ("grid_refresh_schedule", "training_schedule"):
        assert defs.resolve_schedule_def(name).default_status == (
            dg.DefaultScheduleStatus.STOPPED)
    assert defs.resolve_job_def("training_job").tags == constants.GPU_TAG
    assert defs.resolve_sensor_def("crawl_cells_sensor").job_name == "ingest_cells_job"
    auto = defs.resolve_sensor_def("geoscout_automation")
    assert auto.default_status == dg.DefaultSensorStatus.RUNNING


def test_per_cell_assets_batch_retry_and_pool():
    graph = defs.resolve_asset_graph()
    pools = {"mapillary_images": constants.MAPILLARY_POOL,
             "streetview_images": constants.STREETVIEW_POOL, "local_images": None}
    for name in CELL_ASSETS:
        node = graph.get(dg.AssetKey(name))
        assert node.partitions_def == crawl_cells
        assert node.backfill_policy == dg.BackfillPolicy.multi_run(constants.CELLS_PER_RUN)
        assert node.automation_condition is None  # only the crawl-cells sensor crawls
        assert node.group_name == constants.INGEST
        assets_def = graph.assets_def_for_key(dg.AssetKey(name))
        op = assets_def.node_def
        assert op.retry_policy.max_retries >= 2
        assert op.retry_policy.backoff == dg.Backoff.EXPONENTIAL
        assert op.pool == pools[name]


def test_manifest_and_datasets_refresh_training_is_never_automated():
    graph = defs.resolve_asset_graph()
    groups: dict[str, list] = {}
    for key in graph.get_all_asset_keys():
        groups.setdefault(graph.get(key).group_name, []).append(graph.get(key))
    assert groups[constants.TRAIN] and groups[constants.EVAL]
    for node in groups[constants.TRAIN] + groups[constants.EVAL]:
        assert node.automation_condition is None, node.key
    for node in groups[constants.DATASET]:
        assert node.automation_condition is not None, node.key
    assert graph.get(dg.AssetKey("image_manifest")).automation_condition is not None
    auto = defs.resolve_sensor_def("geoscout_automation")
    selected = auto.asset_selection.resolve(graph)
    assert not any(graph.get(k).group_name in (constants.TRAIN, constants.EVAL)
                   for k in selected)


def test_production_resources_use_env_vars(monkeypatch):
    monkeypatch.setenv("GEOSCOUT_SOURCES", "mapillary,streetview")
    prod = build_definitions("production")
    dg.Definitions.validate_loadable(prod)
    mapillary = prod.resources["mapillary"]
    assert isinstance(mapillary.access_token, dg.EnvVar)  # resolved at launch, not at import
    assert mapillary.demo_seed is None
    assert prod.resources["streetview"].store_images_acknowledged is False
    for name in ("crawl_cells_sensor", "geoscout_automation"):  # real APIs: an operator's call
        assert prod.resolve_sensor_def(name).default_status == dg.DefaultSensorStatus.STOPPED


def test_unknown_deployment_is_a_clear_error():
    with pytest.raises(ValueError, match="GEOSCOUT_DEPLOYMENT"):
        build_definitions("staging")
