"""Dagster metadata a person can read: column schemas, count tables, inline images, rounded
figures and per-cell descriptions. The asset bodies call these helpers next to their own
figures; the library computes, this module only turns results into ``dg.MetadataValue``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from geo_assets import plots

PREVIEW_ROWS = 10
PREVIEW_COLUMNS = ("image_id", "source", "lat_deg", "lon_deg", "cell_id", "kept",
                   "drop_reason", "license")
MAP_POINTS = 10_000  # points on the coverage map (a seeded sample beyond): the PNG is inlined
# in the event log, and 10k scattered points already make it about 0.5 MB


def column_schema(schema, docs: Mapping[str, str] | None = None) -> dg.TableSchema:
    """A pyarrow schema as a Dagster column schema (the UI's Columns tab)."""
    docs = docs or {}
    return dg.TableSchema(columns=[
        dg.TableColumn(f.name, str(f.type), description=docs.get(f.name),
                       constraints=dg.TableColumnConstraints(nullable=f.nullable))
        for f in schema])


def counts_table(counts: Mapping[str, int], key: str, value: str = "images") -> dg.MetadataValue:
    """``{name: count}`` as a two-column table, largest first."""
    rows = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return dg.MetadataValue.table(
        records=[dg.TableRecord({key: str(k), value: int(v)}) for k, v in rows],
        schema=dg.TableSchema(columns=[dg.TableColumn(key, "string"),
                                       dg.TableColumn(value, "int")]))


def image(png: bytes, alt: str) -> dg.MetadataValue:
    """A PNG shown inline in the UI."""
    return dg.MetadataValue.md(plots.png_markdown(png, alt))


def preview(frame: pl.DataFrame, columns=PREVIEW_COLUMNS, rows: int = PREVIEW_ROWS):
    """The first rows of ``frame`` as a Markdown table (floats to 5 decimals)."""
    cols = [c for c in columns if c in frame.columns]
    head = frame.select(cols).head(rows)
    values = [[round(v, 5) if isinstance(v, float) else ("" if v is None else v) for v in r]
              for r in head.iter_rows()]
    return dg.MetadataValue.md(plots.markdown_table(cols, values))


def rounded(values: Mapping[str, Any], digits: int = 4) -> dict[str, Any]:
    """Floats rounded to ``digits`` (nested mappings too); everything else as it is."""
    return {k: round(v, digits) if isinstance(v, float)
            else rounded(v, digits) if isinstance(v, Mapping) else v
            for k, v in values.items()}


def file_link(path: str | Path) -> dg.MetadataValue:
    """A link the UI opens: a ``file://`` URL for local paths, the URL itself otherwise."""
    text = str(path)
    return dg.MetadataValue.url(text if "://" in text else Path(text).resolve().as_uri())


def cell_metadata(summary: Mapping[str, Any], place: str, bounds: str) -> dict[str, Any]:
    """One crawl cell's own metadata (on its partition, over the batch's)."""
    seen, kept = int(summary["n_rows"]), int(summary["n_kept"])
    return {"place": place, "bounds": bounds, "images_seen": seen, "images_kept": kept,
            "kept_ratio": round(kept / seen, 4) if seen else 0.0,
            "drop_reasons": counts_table(summary.get("drop_reasons") or {}, "reason"),
            "done_before": bool(summary.get("skipped"))}


def manifest_metadata(frame: pl.DataFrame, coverage_png: bytes | None,
                      coverage_path: str | None) -> dict[str, Any]:
    """Column schema, drop reasons and sources as tables, a preview and the coverage map."""
    from geo_assets.manifest import COLUMN_DOCS, MANIFEST_SCHEMA

    dropped = frame.filter(~pl.col("kept"))
    reasons = dict(dropped.group_by("drop_reason").len().iter_rows()) if dropped.height else {}
    sources = frame.group_by("source").agg(pl.len(), pl.col("kept").sum())
    meta: dict[str, Any] = {
        "dagster/column_schema": column_schema(MANIFEST_SCHEMA, COLUMN_DOCS),
        "dagster/row_count": frame.height,
        "drop_reasons": counts_table({str(k): v for k, v in reasons.items()}, "reason"),
        "sources": dg.MetadataValue.md(plots.markdown_table(
            ["source", "images", "kept"], sources.sort("source").iter_rows(), align="lrr")),
        "preview": preview(frame)}
    if coverage_png is not None:
        meta["coverage_map"] = image(coverage_png, "coverage")
    if coverage_path:
        meta["coverage_map_file"] = file_link(coverage_path)
    return meta


def plain(value: dg.MetadataValue) -> Any:
    """A metadata value as plain JSON-able data (tables as lists of rows), e.g. for scanning
    metadata text for secrets."""
    if isinstance(value, dg.TableMetadataValue):
        return [dict(r.data) for r in value.records]
    if isinstance(value, dg.TableSchemaMetadataValue):
        return [[c.name, c.type, c.description] for c in value.schema.columns]
    return value.value


def map_sample(frame: pl.DataFrame, limit: int = MAP_POINTS, seed: int = 0) -> pl.DataFrame:
    """At most ``limit`` rows for a map (a seeded sample, so reruns draw the same map)."""
    return frame if frame.height <= limit else frame.sample(limit, seed=seed)
