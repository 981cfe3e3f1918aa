"""Ingestion assets: per-cell imagery from each source, and the merged image manifest.

The per-cell assets are partitioned by ``crawl_cells`` and take several cells per run
(``BackfillPolicy.multi_run``): each run walks ``context.partition_keys`` and calls
``geo_assets.ingest.ingest_cell`` once per cell. ``image_manifest`` merges every cell's
manifest and refreshes itself (``eager``) once new cells land. Checks guard the manifest.
"""


import json
import time
from collections import Counter
from dataclasses import asdict, replace

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
from geo_assets.settings import IngestSettings
from pipeline import readable_metadata
from pipeline.constants import CELLS_PER_RUN, FORCE_TAG, MAPILLARY_POOL, STREETVIEW_POOL
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
    """Download progress of one cell (count, rate, ETA) in the run log, at most every
    ``every_s`` seconds, and once when the cell is done."""
    from geo_assets.progress import progress

    bars: dict[str, object] = {}

    def report(done: int, total: int | None = None, stage: str | None = None,
               **_: object) -> None:
        if stage in ("download", None):
            if "bar" not in bars:
                bars["bar"] = progress(total, desc=f"  cell {cell_id} images", unit="img",
                                       write=context.log.info, every_s=every_s)
            bars["bar"].update(done - bars["bar"].n)
        elif stage == "done" and "bar" in bars:
            bars.pop("bar").close()

    return report


# geo_assets.ingest (and scipy behind it) is imported inside the asset bodies: it is slow to
# import and not needed to load the definitions.

def _ingest_cells(context: dg.AssetExecutionContext, settings: GeoscoutSettings,
                  resource, source: Source) -> dg.MaterializeResult:
    """Run ``ingest_cell`` on every cell of this run. A bad credential or setting fails the
    run without retries; a cell that fails transiently is retried with the whole batch (the
    cells already done are skipped then), after the other cells have been crawled."""
    from geo_assets.crawl_state import clear_failure
    from geo_assets.ingest import ingest_cell

    cells = sorted(context.partition_keys)
    if source.value not in settings.sources:
        context.log.info(f"{source.value} is not in settings.sources: nothing to crawl")
        return dg.MaterializeResult(metadata={"enabled": False, "cells": len(cells)})
    root, ingest_settings = settings.root(), settings.ingest_settings()
    cell_inputs = _cell_inputs(context, settings, ingest_settings)
    rows, failed = [], {}
    start = time.monotonic()
    try:
        with resource.open_source() as client:
            if client is None:
                raise InputError(f"{source.value} is in settings.sources but not configured")
            client.preflight()
            if source == Source.LOCAL:  # the folder's EXIF is read once per folder version
                from geo_assets.local_index import use_index

                use_index(root, client)
            cells_bar = _cells_progress(context, source, len(cells))
            describe = _cell_describer(cells)
            budget = _attach_budget(root, resource, client)
            for i, cell_id in enumerate(cells, 1):
                try:
                    cell_settings, land = cell_inputs(cell_id)
                    res = ingest_cell(client, cell_id, root, cell_settings,
                                      _progress(context, cell_id), land=land)
                except QuotaExceededError as exc:  # the other cells would hit it too
                    _save_usage(root, source, budget)
                    _stop_for_quota(settings, source, cells[i - 1:], exc)
                except TransientServiceError as exc:
                    failed[cell_id] = _note_failure(settings, source, cell_id, exc, False)
                    context.log.warning(f"[{i}/{len(cells)}] {source.value} cell {cell_id} "
                                        f"failed, retried later: {exc}")
                    cells_bar.update(1)
                    continue
                clear_failure(root, source.value, cell_id)
                _save_usage(root, source, budget)
                context.log.info(
                    f"[{i}/{len(cells)}] {source.value} cell {cell_id}: {res.n_rows} images, "
                    f"{res.n_kept} kept" + (" (done before)" if res.skipped else ""))
                rows.append(res.summary())
                context.add_asset_metadata(describe(res.summary()), partition_key=cell_id)
                cells_bar.update(1)
    except (InputError, CredentialError) as exc:  # retrying cannot help: say what to fix
        raise dg.Failure(str(exc), allow_retries=False) from exc
    if failed:
        raise dg.Failure(
            f"{len(failed)} of {len(cells)} {source.value} cells failed; finished cells are "
            "kept and skipped on retry", metadata={"failed_cells": dg.MetadataValue.json(failed)})
    return dg.MaterializeResult(metadata=_batch_metadata(rows, time.monotonic() - start))


def _cell_describer(cells: list[str]):
    """Per-cell metadata for each partition (its place, bounds and own counts), so that a
    partition in the UI says where it is and what it holds, not its whole batch's totals."""
    from geo_assets.cell_places import bounds_text, cell_places
    from geo_assets.cells import cells_bounds

    places = cell_places(cells)
    bounds = dict(zip(cells, (bounds_text(b) for b in cells_bounds(cells))))

    def describe(summary: dict) -> dict:
        cell = summary["cell_id"]
        return readable_metadata.cell_metadata(summary, places[cell], bounds[cell])

    return describe


def _cells_progress(context: dg.AssetExecutionContext, source: Source, n: int):
    """Cells done in this run, with rate and ETA, in the run log at most every 30 s."""
    from geo_assets.progress import progress

    return progress(n, desc=f"{source.value} cells", unit="cell", write=context.log.info)


def _attach_budget(root, resource, source):
    """The source's request budgets (per endpoint class), continuing today's usage."""
    from geo_assets.request_budget import RequestBudget, load_usage, utc_day

    client = getattr(source, "client", None)
    if client is None or not hasattr(resource, "budget_settings"):
        return None
    client.budget = RequestBudget(resource.budget_settings(),
                                  load_usage(root, source.name, utc_day(time.time())))
    return client.budget


def _save_usage(root, source: Source, budget) -> None:
    if budget is not None:
        from geo_assets.request_budget import save_usage

        save_usage(root, source.value, budget)


def _note_failure(settings: GeoscoutSettings, source: Source, cell_id: str, exc: Exception,
                  quota: bool) -> dict:
    """Record the cell's failure for the sensor's retry; what the UI shows of it."""
    from geo_assets.crawl_state import record_failure

    rec = record_failure(settings.root(), source.value, cell_id, str(exc), quota=quota,
                         settings=settings.recovery_settings(),
                         retry_at=getattr(exc, "resume_at", None))
    return {"error": rec["error"], "attempts": rec["attempts"], "kind": rec["kind"],
            "next_retry_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                           time.gmtime(rec["next_retry_at"]))}


def _stop_for_quota(settings: GeoscoutSettings, source: Source, rest: list[str],
                    exc: Exception):
    """An exhausted quota stops the batch: this cell and the ones not crawled yet are
    recorded as failed, to be retried by the sensor once the quota has recovered."""
    failed = {cell: _note_failure(settings, source, cell, exc, True) for cell in rest}
    raise dg.Failure(
        f"{source.value} quota exhausted: {exc}; {len(rest)} cells will be retried by the "
        "crawl-cells sensor after the backoff", allow_retries=False,
        metadata={"failed_cells": dg.MetadataValue.json(failed)}) from exc




def _cell_inputs(context: dg.AssetExecutionContext, settings: GeoscoutSettings,
                 base: IngestSettings):
    """``cell_id -> (settings, land)``: the crawl plan's budget for the cell (else
    ``images_per_cell``), ``force`` from the setting or the run tag, and the cell's land part
    (Street View samples its lookups there) when the land polygons are stored."""
    from dataclasses import replace

    from geo_assets.land import cell_land, land_parts, load_land
    from geo_assets.plan import plan_budgets

    root = settings.root()
    budgets = plan_budgets(root) or {}
    force = settings.force_recrawl or context.run.tags.get(FORCE_TAG) == "true"
    parts = land_parts(load_land(root)) if root.exists(layout.LAND_POLYGONS) else None

    def inputs(cell_id: str):
        cell = replace(base, target_per_cell=budgets.get(cell_id, base.target_per_cell),
                       force=force)
        return cell, (cell_land(parts, cell_id) if parts is not None else None)

    return inputs


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
def image_manifest(context: dg.AssetExecutionContext, settings: GeoscoutSettings,
                   local_folder: LocalFolderResource) -> dg.MaterializeResult:
    """Every image of every cell and source in one Parquet table, kept or dropped with the
    reason (the local folder's photos that no crawled cell holds come from its folder part,
    ``geo_assets/local_index.py``); a per-cell version table next to it; its content hash is
    the data version."""
    from geo_assets.merge import merge_manifests

    folder = _folder_part(settings, local_folder)
    ingest = settings.ingest_settings()
    merged = merge_manifests(settings.root(), min_distance_m=ingest.filters.min_distance_m)
    context.log.info(f"merged {merged.n_rows} rows from {merged.n_cells} cell manifests "
                     f"({merged.n_cells_merged} merged again, {merged.n_cells_reused} reused)")
    return dg.MaterializeResult(
        metadata={**merged.metadata(), **folder, **_manifest_views(settings),
                  "filter_settings": dg.MetadataValue.json(_filters_used(settings))},
        data_version=dg.DataVersion(merged.sha256))


def _folder_part(settings: GeoscoutSettings, local_folder: LocalFolderResource) -> dict:
    """Write the local folder's part (its photos in no crawled cell) when the local source
    is on; its counts as metadata."""
    if Source.LOCAL.value not in settings.sources or not local_folder.folder:
        return {}
    from geo_assets.local_index import write_folder_part

    with local_folder.open_source() as source:
        source.preflight()
        part = write_folder_part(settings.root(), source, settings.crawl_level)
    return {"local_photos_in_folder": part["photos_in_folder"],
            "local_photos_in_no_crawled_cell": part["n_rows"],
            "local_folder_part": dg.MetadataValue.json(
                {k: part[k] for k in ("drop_reasons", "crawled_cells", "rebuilt", "version")})}


def _filters_used(settings: GeoscoutSettings) -> dict:
    """The filter and image-check values each source's cells were crawled with (from the
    cells' stats), and the ones configured now."""
    root, used = settings.root(), {}
    for rel in root.glob(layout.cell_stats("*", "*")):  # a stats file: a done cell
        stats = json.loads(root.read_bytes(rel))
        if "filters" in stats:  # (the local folder part has none)
            key = json.dumps({"filters": stats["filters"], "images": stats.get("images")},
                             sort_keys=True)
            entry = used.setdefault(stats["source"], {}).setdefault(key, 0)
            used[stats["source"]][key] = entry + 1
    ingest = settings.ingest_settings()
    return {"configured": {s: asdict(ingest.filters_for(s)) for s in settings.sources},
            "configured_images": asdict(ingest.images),
            "used_by_cells": {src: [{**json.loads(k), "cells": n} for k, n in sorted(v.items())]
                              for src, v in sorted(used.items())}}


def _manifest_views(settings: GeoscoutSettings) -> dict:
    """The merged manifest for people: column schema, drop reasons, preview, coverage map
    (also written to the data root)."""
    from geo_assets import mapviz

    root, frame = settings.root(), _read_manifest(settings)
    png = None
    if frame.height:
        pts = readable_metadata.map_sample(frame)
        png = mapviz.coverage_png(pts["lat_deg"], pts["lon_deg"], pts["source"], pts["kept"])
        root.write_bytes(layout.COVERAGE_MAP, png)
    return readable_metadata.manifest_metadata(
        frame, png, root.uri(layout.COVERAGE_MAP) if png else None)


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
                {k: readable_metadata.plain(v) for k, v in mat.metadata.items()}))
    finding = manifest_checks.leaked_secrets(texts, secrets)
    return _result(replace(finding, n_checked=finding.n_checked - n_hits + n_values))
