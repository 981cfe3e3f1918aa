"""One crawl request per cell at a time: cells the crawl-cells sensor registered (and whose
batch runs it requested) are never requested again by the automation sensor, which used to
start a second run per partition through ``on_missing`` (seen under the daemon while the
batch runs were queued). The per-cell assets carry no automation condition and the automation
sensor's target leaves them out; the crawl sensor is the only thing that requests a crawl."""

from __future__ import annotations

import dagster as dg

from pipeline.definitions import build_definitions
from pipeline.partitions import crawl_cells
from tests.pipeline.conftest import cell_region, tiny_resources, write_grid

CELL_KEYS = [dg.AssetKey(n) for n in ("mapillary_images", "streetview_images", "local_images")]


def test_automation_never_requests_cells_the_crawl_sensor_requested(covered_cells, tmp_path):
    root = str(tmp_path / "data")
    region = cell_region(covered_cells[0])
    write_grid(root, region)
    defs = build_definitions(resources=tiny_resources(root, region=region,
                                                      coastal_buffer_km=0.0))
    with dg.instance_for_test() as instance:
        auto = dg.evaluate_automation_conditions(defs=defs, instance=instance)  # always on
        sensor = defs.resolve_sensor_def("crawl_cells_sensor")
        with dg.build_sensor_context(instance=instance,
                                     resources={"settings": defs.resources["settings"]}) as ctx:
            tick = sensor(ctx)
        cells = [k for r in tick.dynamic_partitions_requests for k in r.partition_keys]
        assert cells and tick.run_requests  # registered, batch run requested (not run yet)
        instance.add_dynamic_partitions(crawl_cells.name, cells)
        auto = dg.evaluate_automation_conditions(defs=defs, instance=instance,
                                                 cursor=auto.cursor)
        assert all(auto.get_num_requested(key) == 0 for key in CELL_KEYS)
        auto_sensor = defs.resolve_sensor_def("geoscout_automation")
        selected = auto_sensor.asset_selection.resolve(defs.resolve_asset_graph())
        assert not set(CELL_KEYS) & set(selected)
