"""``geoscout lineage``: which datasets, splits and models used an image; what fed a model.

    geoscout lineage image mapillary:123 [--data-root DIR_OR_URL] [--json]
    geoscout lineage model RUN_NAME_OR_PATH [--data-root DIR_OR_URL] [--json]

Reads the files in the data root only (geo_assets.lineage); no Dagster instance needed.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from geo_assets import lineage as lin
from geo_assets.storage import default_data_root


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


def short(digest: Any, n: int = 12) -> str:
    """The first ``n`` characters of a hash, or "-" when there is none."""
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
                     f"{short(c.get('version'))}, {c.get('n_kept')}/{c.get('n_rows')} kept")
    d = item.dataset
    if d:
        lines.append(f"  dataset   manifest {short(d.get('manifest_sha256'))}, created "
                     f"{d.get('created_at') or '-'}")
    if item.split:
        fold = item.split.get("fold")
        where = "test" if item.split.get("split") == "test" else f"{item.split.get('split')} " \
            f"fold {fold}"
        lines.append(f"  split     {where}; shard {item.shard or '-'}")
    else:
        lines.append("  split     not in the current splits")
    versions = ", ".join(short(v) for v in item.dataset_versions) or "-"
    lines.append(f"  dataset versions (manifest hashes)  {versions}")
    if item.models:
        lines.append(f"  models ({len(item.models)})")
        for ref in item.models:
            lines.append(f"    {ref.name:24s} {ref.role:5s} manifest {short(ref.manifest_sha256)}"
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
        lines.append(f"    {row.get('source')}/{row.get('cell_id')}: {short(row.get('version'))}"
                     f" -> {short(row.get('version_now'))}")
    names = [s.get("name", "?") for s in item.shards]
    lines.append(f"  shards    {len(names)}: {', '.join(names[:8])}"
                 + (" ..." if len(names) > 8 else ""))
    lines.append(f"  split     {json.dumps(item.split, sort_keys=True, default=str)}")
    if item.n_train_images is not None:
        by_source = ", ".join(f"{k} {v}" for k, v in item.sources.items())
        lines.append(f"  images    {item.n_train_images} training images ({by_source})")
    lines.append(f"  dagster run  {item.dagster_run_id or '-'}")
    lines.append(f"  config    {json.dumps(item.config, sort_keys=True, default=str)}")
    return "\n".join(lines)


def cli(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    root = lin.as_root(args.data_root or default_data_root())
    if args.what == "image":
        item = lin.image_lineage(root, args.image_id)
        text = format_image(item)
    else:
        item = lin.model_lineage(root, args.model)
        text = format_model(item)
    print(json.dumps(item.to_dict(), indent=2, sort_keys=True, default=str) if args.json
          else text)
    return 0
