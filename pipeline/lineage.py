"""``geoscout lineage``: which datasets, splits and models used an image; what fed a model.

    geoscout lineage image mapillary:123 [--data-root DIR_OR_URL] [--json]
    geoscout lineage model RUN_NAME_OR_PATH [--data-root DIR_OR_URL] [--json]

Reads the files in the data root only (geo_assets.lineage); no Dagster instance needed.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from geo_assets import lineage as lin
from geo_assets.storage import DataRoot


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geoscout lineage",
        description="Trace an image to the datasets, splits and models that used it, or a "
        "model back to the manifest, cells, shards, split and runs that fed it.")
    parser.add_argument("--data-root", default=None,
                        help="data root folder or fsspec URL (default: $GEOSCOUT_DATA_ROOT, "
                        "else .geoscout/data in the project)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    sub = parser.add_subparsers(dest="what", required=True)
    image = sub.add_parser("image", help="datasets, splits, shards and models that used an image")
    image.add_argument("image_id", help="image id, e.g. mapillary:123 or streetview:PANO_90")
    model = sub.add_parser("model", help="what fed a model")
    model.add_argument("model", help="run name under models/, or the path of its folder or card")
    for p in (image, model):  # accept the options after the sub-command too
        p.add_argument("--data-root", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                       help=argparse.SUPPRESS)
    return parser


def _short(digest: Any, n: int = 12) -> str:
    return str(digest)[:n] if digest else "-"


def format_image(item: lin.ImageLineage) -> str:
    lines = [f"image {item.image_id}"]
    m = item.manifest
    if m:
        state = "kept" if m.get("kept") else f"dropped ({m.get('drop_reason')})"
        lines.append(f"  manifest  {m.get('source')} id {m.get('source_id')}, group "
                     f"{m.get('group_id')}, cell {m.get('cell_id')}, {state}")
        lines.append(f"  licence   {m.get('license') or '-'}; {m.get('attribution') or '-'}")
    else:
        lines.append("  manifest  not in the current manifest")
    c = item.cell_version
    if c:
        lines.append(f"  cell      {c.get('cell_id')} ({c.get('source')}) version "
                     f"{_short(c.get('version'))}, {c.get('n_kept')}/{c.get('n_rows')} kept")
    d = item.dataset
    if d:
        lines.append(f"  dataset   manifest {_short(d.get('manifest_sha256'))}, created "
                     f"{d.get('created_at') or '-'}")
    if item.split:
        fold = item.split.get("fold")
        where = "test" if item.split.get("split") == "test" else f"{item.split.get('split')} " \
            f"fold {fold}"
        lines.append(f"  split     {where}; shard {item.shard or '-'}")
    else:
        lines.append("  split     not in the current splits")
    versions = ", ".join(_short(v) for v in item.dataset_versions) or "-"
    lines.append(f"  dataset versions (manifest hashes)  {versions}")
    if item.models:
        lines.append(f"  models ({len(item.models)})")
        for ref in item.models:
            lines.append(f"    {ref.name:24s} {ref.role:5s} manifest {_short(ref.manifest_sha256)}"
                         f"  {ref.path}")
    else:
        lines.append("  models    none")
    return "\n".join(lines)


def format_model(item: lin.ModelLineage) -> str:
    current = {True: "same as the data root's manifest", False: "the manifest changed since",
               None: "no manifest in the data root"}[item.manifest_current]
    lines = [f"model {item.name}  ({item.path})",
             f"  manifest  {item.manifest_sha256 or '-'} ({current})",
             (f"  cells     {len(item.cell_versions)} cell versions, "
              f"{len(item.cells_changed)} changed since")]
    for row in item.cells_changed[:10]:
        lines.append(f"    {row.get('source')}/{row.get('cell_id')}: {_short(row.get('version'))}"
                     f" -> {_short(row.get('version_now'))}")
    names = [s.get("name", "?") for s in item.shards]
    lines.append(f"  shards    {len(names)}: {', '.join(names[:8])}"
                 + (" ..." if len(names) > 8 else ""))
    lines.append(f"  split     {json.dumps(item.split, sort_keys=True, default=str)}")
    if item.n_train_images is not None:
        by_source = ", ".join(f"{k} {v}" for k, v in item.sources.items())
        lines.append(f"  images    {item.n_train_images} training images ({by_source})")
    lines.append(f"  run ids   {json.dumps(item.run_ids, sort_keys=True, default=str)}")
    lines.append(f"  config    {json.dumps(item.config, sort_keys=True, default=str)}")
    return "\n".join(lines)


def model_lineage_metadata(root: DataRoot | str, model: str) -> dict[str, Any]:
    """A model's lineage as Dagster metadata for its materialization (the same links
    ``geoscout lineage model`` prints): manifest hash, cell and shard counts, training images
    by source, split settings, the card's location and the Dagster runs that made it."""
    import dagster as dg  # here, not at the top: the CLI itself does not need Dagster

    item = lin.model_lineage(root, model)
    root = lin.as_root(root)
    shards = [s.get("name", "?") for s in item.shards]
    md: dict[str, Any] = {
        "lineage/manifest_hash": dg.MetadataValue.text(item.manifest_sha256 or "unknown"),
        "lineage/n_cells": dg.MetadataValue.int(len(item.cell_versions)),
        "lineage/shards": dg.MetadataValue.json({"count": len(shards), "names": shards}),
        "lineage/n_train_images": dg.MetadataValue.int(item.n_train_images or 0),
        "lineage/images_by_source": dg.MetadataValue.json(item.sources),
        "lineage/split_settings": dg.MetadataValue.json(item.split or {}),
        "lineage/model_card": dg.MetadataValue.path(root.uri(f"{item.path}/{lin.CARD}")),
        "lineage/summary": dg.MetadataValue.md(
            f"Model **{item.name}** trained on {item.n_train_images or 0} images "
            f"from manifest `{_short(item.manifest_sha256)}` ({len(item.cell_versions)} cells, "
            f"{len(shards)} shards). Details: `geoscout lineage model {item.name}`."),
    }
    run_ids = item.run_ids if isinstance(item.run_ids, dict) else {}
    if run_ids.get("dagster_run_id"):
        md["lineage/dagster_run"] = dg.MetadataValue.dagster_run(run_ids["dagster_run_id"])
    return md


def default_data_root() -> str:
    """Same default as ``pipeline.resources.default_data_root`` (a test keeps them equal),
    without importing Dagster, so the command answers in a second."""
    project = Path(__file__).resolve().parent.parent
    return os.environ.get("GEOSCOUT_DATA_ROOT", str(project / ".geoscout" / "data"))


def cli(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    root = lin.as_root(args.data_root or default_data_root())
    if args.what == "image":
        item = lin.image_lineage(root, args.image_id)
        text = format_image(item)
    else:
        item = lin.model_lineage(root, args.model)
        text = format_model(item)
    print(lin.write_json(item.to_dict()) if args.json else text)
    return 0
