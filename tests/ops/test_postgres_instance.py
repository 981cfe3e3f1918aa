"""The production instance config (deploy/dagster.postgres.yaml) against a real PostgreSQL.

Materializes a small per-cell asset graph into an instance built from that file, then reads
the runs, the event log, dynamic partitions and pool limits back, through Dagster and with
plain SQL on the server."""

import json
import shutil
from pathlib import Path

import dagster as dg
import pytest
import yaml

from pipeline import constants
from pipeline.partitions import crawl_cells
from pipeline.platforms import POOL_LIMITS, apply_pool_limits

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
CELLS = ["0312", "0313", "2130"]


@dg.asset(partitions_def=crawl_cells, pool=constants.MAPILLARY_POOL)
def cell_images(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    cell = context.partition_key
    return dg.MaterializeResult(metadata={"cell_id": cell, "n_images": len(cell) * 10},
                                data_version=dg.DataVersion(f"v-{cell}"))


@dg.asset(deps=[cell_images])
def image_manifest(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    cells = sorted(context.instance.get_dynamic_partitions(crawl_cells.name))
    return dg.MaterializeResult(metadata={"n_cells": len(cells)})


@pytest.fixture
def pg_instance(postgres, tmp_path, monkeypatch):
    for key, value in postgres.env.items():
        monkeypatch.setenv(key, value)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DEPLOY / "dagster.postgres.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance


def test_config_reads_credentials_from_env_only():
    text = (DEPLOY / "dagster.postgres.yaml").read_text()
    cfg = yaml.safe_load(text)
    db = cfg["storage"]["postgres"]["postgres_db"]
    assert db.pop("scheme") == "postgresql+psycopg2"
    assert all(set(v) == {"env"} for v in db.values()), db
    assert cfg["concurrency"]["runs"]["tag_concurrency_limits"][0] == {"key": "gpu", "limit": 1}


def test_materialize_and_read_back_from_postgres(pg_instance, postgres):
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

    instance = pg_instance
    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    assert apply_pool_limits(instance) == POOL_LIMITS
    assert instance.event_log_storage.get_concurrency_info(
        constants.MAPILLARY_POOL).slot_count == POOL_LIMITS[constants.MAPILLARY_POOL]

    instance.add_dynamic_partitions(crawl_cells.name, CELLS)
    for cell in CELLS:
        result = dg.materialize([cell_images], instance=instance, partition_key=cell)
        assert result.success
    assert dg.materialize([cell_images, image_manifest], instance=instance,
                          selection=[image_manifest]).success

    # Through Dagster: runs, partitions, latest materialization metadata.
    runs = instance.get_runs()
    assert len(runs) == len(CELLS) + 1
    assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    assert sorted(instance.get_materialized_partitions(dg.AssetKey("cell_images"))) == CELLS
    event = instance.get_latest_materialization_event(dg.AssetKey("image_manifest"))
    assert event.asset_materialization.metadata["n_cells"].value == len(CELLS)

    # Straight from the server: the same facts in Dagster's tables.
    with postgres.cursor() as cur:
        cur.execute("SELECT status, count(*) FROM runs GROUP BY status")
        assert dict(cur.fetchall()) == {"SUCCESS": len(CELLS) + 1}
        cur.execute("SELECT partition, asset_key FROM event_logs WHERE dagster_event_type = "
                    "'ASSET_MATERIALIZATION' ORDER BY partition NULLS LAST")
        rows = cur.fetchall()
        assert [p for p, _ in rows] == [*CELLS, None]
        assert {json.loads(k)[0] for _, k in rows} == {"cell_images", "image_manifest"}
        cur.execute("SELECT partition FROM dynamic_partitions WHERE partitions_def_name = %s "
                    "ORDER BY partition", (crawl_cells.name,))
        assert [r[0] for r in cur.fetchall()] == CELLS
        cur.execute('SELECT concurrency_key, "limit" FROM concurrency_limits')
        assert dict(cur.fetchall()) == POOL_LIMITS
        # The mapillary pool's slots live on the server, and every pooled step gave its back.
        cur.execute("SELECT count(*), count(run_id) FROM concurrency_slots "
                    "WHERE concurrency_key = %s AND NOT deleted", (constants.MAPILLARY_POOL,))
        assert cur.fetchone() == (POOL_LIMITS[constants.MAPILLARY_POOL], 0)
        # No credential reaches the event log.
        cur.execute("SELECT count(*) FROM event_logs WHERE event LIKE %s",
                    (f"%{postgres.password}%",))
        assert cur.fetchone()[0] == 0


def test_run_queue_and_pools_are_configured(pg_instance):
    config = pg_instance.get_concurrency_config()
    assert config.run_queue_config.max_concurrent_runs == 8
    limits = {(d["key"], d.get("value")): d["limit"]
              for d in config.run_queue_config.tag_concurrency_limits}
    assert limits[("gpu", None)] == 1
    assert config.pool_config.default_pool_limit == 4
    assert pg_instance.run_coordinator.__class__.__name__ == "QueuedRunCoordinator"


def test_helm_values_match_the_instance_file():
    """The Helm chart writes its own dagster.yaml: its limits must match ours."""
    ours = yaml.safe_load((DEPLOY / "dagster.postgres.yaml").read_text())["concurrency"]
    helm = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())["concurrency"]
    assert helm["runs"]["maxConcurrentRuns"] == ours["runs"]["max_concurrent_runs"]
    assert helm["runs"]["tagConcurrencyLimits"] == ours["runs"]["tag_concurrency_limits"]
    helm_pg = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())["postgresql"]
    assert helm_pg["postgresqlScheme"] == "postgresql+psycopg2"
    assert helm["pools"] == {"defaultLimit": ours["pools"]["default_limit"],
                             "granularity": ours["pools"]["granularity"]}
