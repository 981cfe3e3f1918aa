"""Ingestion assets: per-cell imagery from each source, and the merged image manifest.

The per-cell assets are partitioned by ``crawl_cells`` and take several cells per run
(``BackfillPolicy.multi_run``): each run walks ``context.partition_keys`` and calls
``geo_assets.ingest.ingest_cell`` once per cell. ``image_manifest`` merges every cell's
manifest and refreshes itself (``eager``) once new cells land. Checks guard the manifest.
"""


import time
from collections import Counter
from dataclasses import replace

import dagster as dg
import polars as pl

from geo_assets import layout, manifest_checks, plots
from geo_assets.clients.http import (
    CredentialError,
    QuotaExceededError,
    TransientServiceError,
)
from geo_assets.errors import InputError
from geo_assets.manifest import Source
from pipeline.constants import CELLS_PER_RUN, MAPILLARY_POOL, STREETVIEW_POOL
from pipeline.partitions import crawl_cells
from pipeline.resources import (
    GeoscoutSettings,
    LocalFolderResource,
    MapillaryResource,
    StreetViewResource,
)

GRID_CELLS = dg.AssetKey("grid_cells")

# A failed batch is retried as a whole; the library resumes cells it already finished.
CELL_RETRY = dg.RetryPolicy(
    max_retries=3, delay=20, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)

# New cells are crawled once they appear (the sensor also requests them in batches; a cell
# already in a run is not requested again). Training is never automated.
CELL_AUTOMATION = dg.AutomationCondition.on_missing() & ~dg.AutomationCondition.in_progress()

# Refresh the merged manifest whenever cells update, once nothing upstream is in flight;
# cells that are still missing (a source turned off, a cell that keeps failing) do not block.
MANIFEST_AUTOMATION = dg.AutomationCondition.eager().without(
    ~dg.AutomationCondition.any_deps_missing())


def _cell_asset_kwargs(source: Source, pool: str | None) -> dict:
    return {
        "name": f"{source.value}_images",
        "partitions_def": crawl_cells,
        "deps": [GRID_CELLS],
        "pool": pool,
        "backfill_policy": dg.BackfillPolicy.multi_run(max_partitions_per_run=CELLS_PER_RUN),
        "retry_policy": CELL_RETRY,
        "automation_condition": CELL_AUTOMATION,
        "kinds": {"parquet"},
        "description": f"{source.value.capitalize()} images of each crawl cell: fetched, "
        "validated, filtered, stored by SHA-256, one Parquet manifest per cell.",
    }


def _progress(context: dg.AssetExecutionContext, cell_id: str, every_s: float = 5.0):
    """Download progress in the run log, at most every ``every_s`` seconds per cell."""
    last = [time.monotonic()]

    def report(done: int, total: int | None = None, stage: str | None = None,
               **_: object) -> None:
        now = time.monotonic()
        if stage is None and now - last[0] >= every_s:
            last[0] = now
            context.log.info(f"  cell {cell_id}: {done}/{total} images fetched")

    return report


# geo_assets.ingest (and scipy behind it) is imported inside the asset bodies: it is slow to
# import and not needed to load the definitions.

def _ingest_cells(context: dg.AssetExecutionContext, settings: GeoscoutSettings,
                  resource, source: Source) -> dg.MaterializeResult:
    """Run ``ingest_cell`` on every cell of this run. A bad credential or setting fails the
    run without retries; a cell that fails transiently is retried with the whole batch (the
    cells already done are skipped then), after the other cells have been crawled."""
    from geo_assets.ingest import ingest_cell

    cells = sorted(context.partition_keys)
    if source.value not in settings.sources:
        context.log.info(f"{source.value} is not in settings.sources: nothing to crawl")
        return dg.MaterializeResult(metadata={"enabled": False, "cells": len(cells)})
    root, ingest_settings = settings.root(), settings.ingest_settings()
    rows, failed = [], {}
    start = time.monotonic()
    try:
        with resource.open_source() as client:
            if client is None:
                raise InputError(f"{source.value} is in settings.sources but not configured")
            client.preflight()
            for i, cell_id in enumerate(cells, 1):
                try:
                    res = ingest_cell(client, cell_id, root, ingest_settings,
                                      _progress(context, cell_id))
                except QuotaExceededError:
                    raise  # the other cells would hit it too: back off (RetryPolicy), retry
                except TransientServiceError as exc:
                    failed[cell_id] = str(exc)
                    context.log.warning(f"[{i}/{len(cells)}] {source.value} cell {cell_id} "
                                        f"failed, retried later: {exc}")
                    continue
                context.log.info(
                    f"[{i}/{len(cells)}] {source.value} cell {cell_id}: {res.n_rows} images, "
                    f"{res.n_kept} kept" + (" (done before)" if res.skipped else ""))
                rows.append(res.summary())
    except (InputError, CredentialError) as exc:  # retrying cannot help: say what to fix
        raise dg.Failure(str(exc), allow_retries=False) from exc
    if failed:
        raise dg.Failure(
            f"{len(failed)} of {len(cells)} {source.value} cells failed; finished cells are "
            "kept and skipped on retry", metadata={"failed_cells": dg.MetadataValue.json(failed)})
    return dg.MaterializeResult(metadata=_batch_metadata(rows, time.monotonic() - start))


def _batch_metadata(rows: list[dict], seconds: float) -> dict:
    kept = sum(r["n_kept"] for r in rows)
    seen = sum(r["n_rows"] for r in rows)
    reasons: Counter = Counter()
    for r in rows:
        reasons.update(r.get("drop_reasons", {}))
    return {
        "cells": len(rows),
        "images_seen": seen,
        "images_kept": kept,
        "kept_ratio": round(kept / seen, 4) if seen else 0.0,
        "drop_reasons": dg.MetadataValue.json(dict(sorted(reasons.items()))),
        "seconds": round(seconds, 2),
        "images_per_s": round(seen / seconds, 1) if seconds > 0 else 0.0,
        "cells_preview": dg.MetadataValue.md(_cells_markdown(rows)),
    }


def _cells_markdown(rows: list[dict], limit: int = 20) -> str:
    return plots.markdown_table(["cell", "images", "kept"],
                                [(r["cell_id"], r["n_rows"], r["n_kept"]) for r in rows],
                                limit=limit, align="lrr")


@dg.asset(**_cell_asset_kwargs(Source.MAPILLARY, MAPILLARY_POOL))
def mapillary_images(context: dg.AssetExecutionContext, settings: GeoscoutSettings,
                     mapillary: MapillaryResource) -> dg.MaterializeResult:
    return _ingest_cells(context, settings, mapillary, Source.MAPILLARY)


@dg.asset(**_cell_asset_kwargs(Source.STREETVIEW, STREETVIEW_POOL))
def streetview_images(context: dg.AssetExecutionContext, settings: GeoscoutSettings,
                      streetview: StreetViewResource) -> dg.MaterializeResult:
    return _ingest_cells(context, settings, streetview, Source.STREETVIEW)


@dg.asset(**_cell_asset_kwargs(Source.LOCAL, None))
def local_images(context: dg.AssetExecutionContext, settings: GeoscoutSettings,
                 local_folder: LocalFolderResource) -> dg.MaterializeResult:
    return _ingest_cells(context, settings, local_folder, Source.LOCAL)


CELL_ASSETS = (mapillary_images, streetview_images, local_images)


@dg.asset(deps=list(CELL_ASSETS), automation_condition=MANIFEST_AUTOMATION, kinds={"parquet"})
def image_manifest(context: dg.AssetExecutionContext,
                   settings: GeoscoutSettings) -> dg.MaterializeResult:
    """Every image of every cell and source in one Parquet table, kept or dropped with the
    reason; a per-cell version table next to it; its content hash is the data version."""
    from geo_assets.merge import merge_manifests

    merged = merge_manifests(settings.root())
    context.log.info(f"merged {merged.n_rows} rows from {merged.n_cells} cell manifests")
    return dg.MaterializeResult(
        metadata=merged.metadata(), data_version=dg.DataVersion(merged.sha256))


# --- checks ------------------------------------------------------------------------------

def _read_manifest(settings: GeoscoutSettings, columns: list[str] | None = None) -> pl.DataFrame:
    root = settings.root()
    with root.fs.open(root.path(layout.IMAGE_MANIFEST), "rb") as f:
        return pl.read_parquet(f, columns=columns)


def _result(finding: manifest_checks.Finding,
            severity=dg.AssetCheckSeverity.ERROR) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=finding.passed, severity=severity,
                               metadata=finding.metadata())


@dg.asset_check(asset=image_manifest, blocking=True)
def unique_image_ids(settings: GeoscoutSettings) -> dg.AssetCheckResult:
    """No image id appears twice in the merged manifest."""
    return _result(manifest_checks.duplicate_image_ids(_read_manifest(settings, ["image_id"])))


@dg.asset_check(asset=image_manifest)
def coordinates_inside_cells(settings: GeoscoutSettings) -> dg.AssetCheckResult:
    """Every image lies inside its crawl cell (rows dropped for their location aside)."""
    return _result(manifest_checks.coordinates_outside_cells(
        _read_manifest(settings, manifest_checks.CELL_CHECK_COLUMNS)))


# the decode check re-reads a seeded sample of the kept files (all were decoded at ingest)
DECODE_CHECK_SAMPLE = 2000


@dg.asset_check(asset=image_manifest)
def kept_files_decode(settings: GeoscoutSettings) -> dg.AssetCheckResult:
    """A seeded sample of the kept images' files (all when fewer than DECODE_CHECK_SAMPLE)
    exists in the data root and decodes in full."""
    manifest = _read_manifest(settings, ["kept", "sha256"])
    return _result(manifest_checks.kept_files_bad(manifest, settings.root(),
                                                  sample=DECODE_CHECK_SAMPLE,
                                                  seed=manifest.height))


@dg.asset_check(asset=image_manifest, additional_deps=list(CELL_ASSETS))
def no_secrets(context: dg.AssetCheckExecutionContext, settings: GeoscoutSettings,
               mapillary: MapillaryResource,
               streetview: StreetViewResource) -> dg.AssetCheckResult:
    """No token, key, signature or signed URL in the manifest, the per-cell statistics or
    the ingestion assets' metadata."""
    root = settings.root()
    secrets = [mapillary.access_token, streetview.api_key, streetview.signing_secret]
    scan = pl.scan_parquet(root.uri(layout.IMAGE_MANIFEST),
                           storage_options=root.storage_options or None)
    n_values, texts = manifest_checks.suspicious_texts(scan, secrets)
    n_hits = len(texts)
    for rel in root.glob(layout.cell_stats("*", "*")):
        texts.append((rel, root.read_bytes(rel).decode("utf-8", "replace")))
    for key in [a.key for a in CELL_ASSETS] + [image_manifest.key]:
        event = context.instance.get_latest_materialization_event(key)
        mat = event.asset_materialization if event else None
        if mat is not None:
            texts.extend(manifest_checks.json_texts(
                f"metadata of {key.to_user_string()}",
                {k: v.value for k, v in mat.metadata.items()}))
    finding = manifest_checks.leaked_secrets(texts, secrets)
    return _result(replace(finding, n_checked=finding.n_checked - n_hits + n_values))
