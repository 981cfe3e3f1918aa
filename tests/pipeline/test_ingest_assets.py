"""One crawl cell end to end through Dagster: the per-cell assets against the tiny demo world
on loopback, the merged manifest, and its checks, in a temporary data root."""

from __future__ import annotations

import dagster as dg
import polars as pl

from geo_assets.layout import IMAGE_MANIFEST as MERGED_PATH
from geo_assets.storage import DataRoot
from pipeline.assets import ingest
from pipeline.partitions import crawl_cells
from pipeline.resources import DEMO_GOOGLE_KEY, DEMO_MAPILLARY_TOKEN, StreetViewResource
from tests.pipeline.conftest import tiny_resources

CHECKS = dg.load_asset_checks_from_modules([ingest])


def _materialize(instance, resources, cells, selection=None):
    instance.add_dynamic_partitions(crawl_cells.name, cells)
    return dg.materialize(
        [*ingest.CELL_ASSETS, ingest.image_manifest, *CHECKS], instance=instance,
        resources=resources, selection=selection,
        tags={"dagster/asset_partition_range_start": cells[0],
              "dagster/asset_partition_range_end": cells[-1]},
        raise_on_error=False)


def _failure_message(result):
    """The error message of the run's first step failure."""
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    return failure.event_specific_data.error.message


def test_one_cell_end_to_end(demo_server, covered_cells, tmp_path):
    cell = covered_cells[0]
    root = DataRoot(str(tmp_path / "data"))
    with dg.instance_for_test() as instance:
        result = _materialize(instance, tiny_resources(root.url), [cell],
                              selection=list(ingest.CELL_ASSETS))
        assert result.success
        meta = result.asset_materializations_for_node("mapillary_images")[0].metadata
        assert meta["cells"].value == 1 and meta["images_kept"].value > 0
        local = result.asset_materializations_for_node("local_images")[0].metadata
        assert local["enabled"].value is False  # not in settings.sources: materialized empty

        merged = dg.materialize([*ingest.CELL_ASSETS, ingest.image_manifest, *CHECKS],
                                instance=instance, resources=tiny_resources(root.url),
                                selection=[ingest.image_manifest])
        assert merged.success
        checks = merged.get_asset_check_evaluations()
        assert sorted(c.check_name for c in checks) == [
            "coordinates_inside_cells", "kept_files_decode", "no_secrets", "unique_image_ids"]
        assert all(c.passed for c in checks), [c for c in checks if not c.passed]

    table = pl.read_parquet(root.path(MERGED_PATH))
    assert set(table["cell_id"]) == {cell}
    assert set(table["source"]) <= {"mapillary", "streetview"}
    assert table.filter(pl.col("kept")).height == meta["images_kept"].value + sum(
        m.metadata["images_kept"].value
        for m in result.asset_materializations_for_node("streetview_images"))
    assert table.filter(~pl.col("kept"))["drop_reason"].null_count() == 0
    for name, dtype in table.schema.items():  # no secrets in any text column
        if dtype == pl.String:
            values = " ".join(table[name].drop_nulls().to_list())
            assert DEMO_MAPILLARY_TOKEN not in values and DEMO_GOOGLE_KEY not in values, name


def test_no_secrets_check_fails_on_a_leaked_token(demo_server, covered_cells, tmp_path):
    cell = covered_cells[0]
    root = DataRoot(str(tmp_path / "data"))
    resources = tiny_resources(root.url)
    with dg.instance_for_test() as instance:
        assert _materialize(instance, resources, [cell]).success
        table = pl.read_parquet(root.path(MERGED_PATH))
        leaked = table.with_columns(pl.lit(
            f"https://example.test/img.jpg?access_token={DEMO_MAPILLARY_TOKEN}").alias("error"))
        leaked.write_parquet(root.path(MERGED_PATH))
        result = dg.materialize([ingest.image_manifest, *CHECKS], instance=instance,
                                resources=resources, selection=dg.AssetSelection.checks(
                                    ingest.no_secrets), raise_on_error=False)
        (check,) = result.get_asset_check_evaluations()
        assert not check.passed
        assert check.metadata["failed"].value > 0
        assert DEMO_MAPILLARY_TOKEN not in str(check.metadata["examples"].value)


def test_streetview_refuses_to_store_images_without_acknowledgement(demo_server,
                                                                     covered_cells, tmp_path):
    resources = tiny_resources(str(tmp_path / "data"))
    resources["streetview"] = StreetViewResource(demo_seed=0, demo_preset="tiny")
    with dg.instance_for_test() as instance:
        result = _materialize(instance, resources, covered_cells[:1],
                              selection=[ingest.streetview_images])
        assert not result.success
        message = _failure_message(result)
        assert "refusing to store Street View images" in message
        # a setting, not a transient fault: no retries were spent on it
        assert not any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)
    assert not list((tmp_path / "data").rglob("*.jpg"))


def test_several_cells_in_one_run(demo_server, covered_cells, tmp_path):
    cells = sorted(covered_cells[:3])
    with dg.instance_for_test() as instance:
        result = _materialize(instance, tiny_resources(str(tmp_path / "data")), cells,
                              selection=[ingest.mapillary_images])
        assert result.success
        assert instance.get_materialized_partitions(ingest.mapillary_images.key) == set(cells)
        assert len({r.run_id for r in instance.get_runs()}) == 1


def test_a_rejected_token_fails_at_once_and_is_not_shown(demo_server, covered_cells, tmp_path):
    from pipeline.resources import MapillaryResource

    resources = tiny_resources(str(tmp_path / "data"))
    wrong = "MLY|not-the-right-token-123"
    resources["mapillary"] = MapillaryResource(
        access_token=wrong, graph_url=f"{demo_server.url}/mapillary",
        tiles_url=f"{demo_server.url}/mapillary-tiles")
    with dg.instance_for_test() as instance:
        result = _materialize(instance, resources, covered_cells[:1],
                              selection=[ingest.mapillary_images])
        assert not result.success
        message = _failure_message(result)
        assert "MAPILLARY_TOKEN" in message
        assert wrong not in message and "not-the-right-token" not in message
        assert not any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)
        logs = " ".join(str(r.user_message) for r in instance.all_logs(result.run_id))
        assert "not-the-right-token" not in logs
