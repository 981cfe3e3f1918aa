"""A small code location for the UI test: the per-cell → manifest → shards → model chain,
on the project's crawl-cell partitions, with the model's lineage as metadata (built by
pipeline.lineage_metadata.model_lineage_metadata, as the training asset does). The test materializes
it against a data root from tests/ops/ops_data.py, then opens the UI on it."""

import dagster as dg

from geo_assets import layout
from pipeline.constants import DATASET, INGEST, TRAIN
from pipeline.lineage_metadata import model_lineage_metadata
from pipeline.partitions import crawl_cells
from pipeline.resources import GeoscoutSettings


@dg.asset(partitions_def=crawl_cells, group_name=INGEST)
def mapillary_images(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"cell_id": context.partition_key})


@dg.asset(deps=[mapillary_images], group_name=INGEST)
def image_manifest(settings: GeoscoutSettings) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"data_root": settings.root().uri(layout.MANIFESTS_DIR)})


@dg.asset(deps=[image_manifest], group_name=DATASET)
def shards() -> dg.MaterializeResult:
    return dg.MaterializeResult()


@dg.asset(deps=[shards], group_name=TRAIN)
def trained_model(settings: GeoscoutSettings) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata=model_lineage_metadata(settings.root(), "run-a"))


defs = dg.Definitions(assets=[mapillary_images, image_manifest, shards, trained_model],
                      resources={"settings": GeoscoutSettings()})
