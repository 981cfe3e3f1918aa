"""The crawl plan asset: density-adaptive crawl cells and their image budgets, planned once
per region between ``grid_cells`` and the per-cell crawl (``geo_assets.plan``).

The crawl-cells sensor registers the plan's cells as ``crawl_cells`` partitions (children of
split cells added, split parents retired with their images kept) and the per-cell crawl lists
each cell's planned number of images. The dry run (expected requests and images per source,
Street View's cost) is in the metadata and printed by ``geoscout plan``.
"""

import dagster as dg

from geo_assets import layout, plots
from geo_assets.errors import InputError
from pipeline.resources import (
    GeoscoutSettings,
    LocalFolderResource,
    MapillaryResource,
    StreetViewResource,
)

GRID_CELLS = dg.AssetKey("grid_cells")


def _land_parts(settings: GeoscoutSettings):
    from geo_assets.land import land_parts, load_land

    root = settings.root()
    return land_parts(load_land(root)) if root.exists(layout.LAND_POLYGONS) else None


def plan_metadata(info: dict, png: bytes | None = None) -> dict:
    """The plan summary as asset metadata: counts, the dry run per source, the map."""
    dry = info["dry_run"]
    rows = [(src, d["cells"], d["images"],
             ", ".join(f"{k} {v}" for k, v in d["requests"].items()) or "none",
             f"${d['cost_usd']:.2f}" if "cost_usd" in d else "-") for src, d in dry.items()]
    meta = {
        "cells": info["cells"], "split_cells": info["split_cells"],
        "retired_cells": len(info["retired_cells"]), "images_total": info["images_total"],
        "coverage_total": dg.FloatMetadataValue(info["coverage_total"]),
        "coverage_unit": info["coverage_unit"], "policy": info["settings"]["policy"],
        "dry_run": dg.MetadataValue.json(dry),
        "dry_run_table": dg.MetadataValue.md(plots.markdown_table(
            ["source", "cells", "images", "requests", "cost"], rows, align="lrrll")),
    }
    if "streetview" in dry:
        meta["streetview_cost_usd"] = dg.FloatMetadataValue(dry["streetview"]["cost_usd"])
    if png is not None:
        meta["map"] = dg.MetadataValue.md(plots.png_markdown(png, "crawl plan"))
    return meta


@dg.asset(deps=[GRID_CELLS], kinds={"parquet"},
          description="The crawl plan: crawl cells split where coverage is dense, each with "
          f"its image budget and estimated coverage ({layout.CRAWL_PLAN}), a dry run and a "
          "map.")
def crawl_plan(context: dg.AssetExecutionContext, settings: GeoscoutSettings,
               mapillary: MapillaryResource, streetview: StreetViewResource,
               local_folder: LocalFolderResource) -> dg.MaterializeResult:
    from geo_assets.grid import crawl_cells, load_grid
    from geo_assets.plan import make_plan

    root = settings.root()
    cells = crawl_cells(load_grid(root), settings.crawl_level)
    resources = {"mapillary": mapillary, "streetview": streetview, "local": local_folder}
    plan_source = settings.plan_source or settings.sources[0]
    if plan_source not in resources:
        raise dg.Failure(f"plan_source {plan_source!r} is unknown: use "
                         f"{sorted(resources)}", allow_retries=False)
    try:
        with resources[plan_source].open_source() as source:
            if source is None:
                raise InputError(f"plan_source {plan_source} is not configured")
            info = make_plan(root, cells, source, settings.plan_settings(),
                             sources=list(settings.sources),
                             images_per_cell=settings.images_per_cell,
                             mapillary=mapillary.library_settings(),
                             streetview=streetview.library_settings(),
                             land_parts=_land_parts(settings))
    except InputError as exc:
        raise dg.Failure(str(exc), allow_retries=False) from exc
    context.log.info(f"crawl plan: {info['cells']} cells ({info['split_cells']} from splits), "
                     f"{info['images_total']} images")
    return dg.MaterializeResult(
        metadata=plan_metadata(info, root.read_bytes(layout.CRAWL_PLAN_PNG)),
        data_version=dg.DataVersion(root.sha256(layout.CRAWL_PLAN)[:16]))
