"""The ``geoscout`` command. Each sub-command lives with the code it drives and is
imported only when used, so ``geoscout predict`` does not load Dagster."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from geo_assets.errors import GeoscoutError

# name -> (module, help). Each module exposes ``cli(argv: list[str]) -> int``.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("pipeline.demo_run", "run the whole graph on the built-in demo world"),
    "demo-server": ("geo_assets.demo.server", "serve the demo world's Mapillary/Street View API"),
    "predict": ("training.predict", "predict where photos were taken"),
    "lineage": ("geo_assets.lineage_cli", "show which images fed which datasets and models"),
    "plan": ("pipeline.plan_cli", "crawl plan: dry run (requests, images, cost) and status"),
}


def ensure_dagster_home() -> None:
    """Use the project-local instance (.dagster_home) unless DAGSTER_HOME is set."""
    if os.environ.get("DAGSTER_HOME"):
        return
    root = Path(__file__).resolve().parent.parent
    home = root / ".dagster_home"
    home.mkdir(exist_ok=True)
    link = home / "dagster.yaml"
    if not link.exists():
        link.symlink_to(root / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="geoscout", description="Build image-geolocation datasets and models.")
    parser.add_argument("command", choices=sorted(COMMANDS), help="sub-command")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="its arguments (see COMMAND -h)")
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        for name, (_, text) in sorted(COMMANDS.items()):
            print(f"  {name:12s} {text}")
        return 0
    ns = parser.parse_args(argv[:1])
    module = importlib.import_module(COMMANDS[ns.command][0])
    ensure_dagster_home()
    try:
        return int(module.cli(argv[1:]) or 0)
    except GeoscoutError as exc:
        print(f"geoscout {ns.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
