"""``geoscout plan``: the crawl plan's dry run, and the crawl's status per cell.

    geoscout plan [--data-root DIR]                 print the stored plan's dry run
    geoscout plan --make [--demo] [--total-images N] [--policy P] [--threshold T] [--cap C]
                                                    plan now (land, grid, crawl_plan), print
    geoscout plan --status [--data-root DIR]        cells done / failed / pending per source

``--make`` materializes ``land_polygons``, ``grid_cells`` and ``crawl_plan`` in-process with
the deployment's resources (``--demo``: the demo profile on its loopback server) and fetches
nothing but coverage: nothing is downloaded or paid for.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from geo_assets import layout
from geo_assets.errors import DataUnavailableError
from geo_assets.storage import DataRoot, default_data_root

SETTING_FLAGS = {"total_images": "plan_total_images", "policy": "plan_policy",
                 "threshold": "plan_split_threshold", "cap": "plan_max_images_per_cell"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="geoscout plan", description=__doc__.split("\n")[0])
    p.add_argument("--data-root", default=None, help="data root (default: $GEOSCOUT_DATA_ROOT)")
    p.add_argument("--make", action="store_true", help="make the plan now, then print it")
    p.add_argument("--demo", action="store_true", help="with --make: the demo profile")
    p.add_argument("--status", action="store_true", help="print the crawl's status per cell")
    p.add_argument("--max-age-days", type=float, default=0.0,
                   help="with --status: crawls older than this count as stale (0: never)")
    p.add_argument("--total-images", type=int, help="images over the whole region")
    p.add_argument("--policy", choices=["uniform", "coverage", "weight"], help="budget policy")
    p.add_argument("--threshold", type=float, help="coverage above which a cell splits")
    p.add_argument("--cap", type=int, help="budget cap per cell")
    return p


def format_plan(info: dict) -> str:
    """The plan summary as lines of text: cells, budgets, the dry run per source."""
    lines = [(f"crawl plan: {info['cells']} cells at level {info['crawl_level']}+ "
             f"({info['split_cells']} from splits, {len(info['retired_cells'])} cells "
             f"retired), policy {info['settings']['policy']}, "
             f"{info['images_total']} images; coverage {info['coverage_total']:g} "
             f"{info['coverage_unit']}")]
    for source, d in info["dry_run"].items():
        reqs = ", ".join(f"{k} {v}" for k, v in d["requests"].items()) or "no requests"
        cost = f", cost ${d['cost_usd']:.2f}" if "cost_usd" in d else ""
        lines.append(f"  {source:10s} {d['images']:>8d} images in {d['cells']} cells; "
                     f"requests: {reqs}{cost}")
    return "\n".join(lines)


def read_summary(root: DataRoot) -> dict:
    if not root.exists(layout.CRAWL_PLAN_SUMMARY):
        raise DataUnavailableError(f"no crawl plan in {root.url}: run `geoscout plan --make` "
                                   "or materialize crawl_plan")
    return json.loads(root.read_bytes(layout.CRAWL_PLAN_SUMMARY))


def make(args: argparse.Namespace) -> DataRoot:
    """Materialize land, grid and plan in-process with the chosen settings."""
    import dagster as dg

    from pipeline.definitions import build_definitions, demo_resources, production_resources

    resources = demo_resources(data_root=args.data_root) if args.demo else \
        production_resources()
    settings = resources["settings"]
    overrides = {SETTING_FLAGS[k]: v for k, v in vars(args).items()
                 if k in SETTING_FLAGS and v is not None}
    if args.data_root:
        overrides["data_root"] = args.data_root
    resources["settings"] = type(settings)(**{**settings.model_dump(), **overrides})
    defs = build_definitions(resources=resources)
    keys = [dg.AssetKey(k) for k in ("land_polygons", "grid_cells", "crawl_plan")]
    assets = [defs.get_assets_def(k) for k in keys]
    result = dg.materialize(assets, resources=resources, raise_on_error=True)
    if not result.success:  # pragma: no cover - raise_on_error raises first
        raise DataUnavailableError("the crawl plan could not be made")
    return resources["settings"].root()


def status_text(root: DataRoot, max_age_days: float = 0.0) -> str:
    """The crawl's state per source: the plan's cells (else every cell crawled or failed
    so far), done / stale / failed / retry due / pending, and the failed cells' next retry."""
    from geo_assets.crawl_state import crawl_status, format_status
    from geo_assets.plan import read_plan
    from geo_assets.settings import RecoverySettings

    files = root.glob(f"{layout.CELLS_DIR}/*/*")
    sources = sorted({f.split("/")[-2] for f in files}) or ["mapillary"]
    table = read_plan(root)
    names = {f.split("/")[-1].split(".")[0] for f in files}
    cells = table["cell_id"].to_list() if table is not None else \
        sorted(n for n in names if n.isdigit())  # not the local folder part
    if not cells:
        return f"no crawl plan and no crawled cells in {root.url}"
    return format_status(crawl_status(root, sources, cells,
                                      RecoverySettings(max_age_days=max_age_days)))


def cli(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    root = DataRoot(args.data_root or default_data_root())
    if args.make:
        root = make(args)
    if args.status:
        print(status_text(root, args.max_age_days))
        return 0
    print(format_plan(read_summary(root)))
    return 0
