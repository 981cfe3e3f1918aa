"""The ``geoscout`` command (click). Sub-commands that drive the Dagster instance live in
``pipeline/commands/``; ``demo``, ``demo-server``, ``predict`` and ``lineage`` live with the
code they drive (each module exposes ``cli(argv) -> int`` with its own argparse parser) and
are imported only when used, so ``geoscout predict`` does not load Dagster.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from pathlib import Path

import click

from geo_assets.errors import GeoscoutError

# name -> (module, help). Each module exposes ``cli(argv: list[str]) -> int``.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("pipeline.demo_run", "Run the whole graph on the built-in demo world."),
    "demo-server": ("geo_assets.demo.server",
                    "Serve the demo world's Mapillary/Street View API."),
    "predict": ("training.predict", "Predict where photos were taken."),
    "lineage": ("geo_assets.lineage_cli", "Show which images fed which datasets and models."),
    "plan": ("pipeline.plan_cli", "Crawl plan: dry run (requests, images, cost) and status."),
}


def ensure_dagster_home() -> None:
    """Use ``$DAGSTER_HOME`` (created, with the project's dagster.yaml copied in, when it does
    not exist yet), else the project-local instance ``.dagster_home``."""
    import shutil

    root = Path(__file__).resolve().parent.parent
    configured = os.environ.get("DAGSTER_HOME")
    home = Path(configured) if configured else root / ".dagster_home"
    try:
        home.mkdir(parents=True, exist_ok=True)
        if not (home / "dagster.yaml").exists():
            if configured:
                shutil.copyfile(root / "dagster.yaml", home / "dagster.yaml")
            else:
                (home / "dagster.yaml").symlink_to(root / "dagster.yaml")
    except OSError as exc:
        raise GeoscoutError(f"DAGSTER_HOME {home} cannot be created or written ({exc}): "
                            "set DAGSTER_HOME to a writable folder") from exc
    os.environ["DAGSTER_HOME"] = str(home)


class UserError(click.ClickException):
    """A ``GeoscoutError`` shown as one line (no traceback), exit status 2."""

    exit_code = 2


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except GeoscoutError as exc:
            raise UserError(str(exc)) from None


def _session(ctx: click.Context):
    from pipeline.commands.runs import open_session

    ensure_dagster_home()
    warnings.filterwarnings("ignore", category=Warning, module="dagster")
    return open_session("INFO" if ctx.obj.get("verbose") else "WARNING")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config", type=click.Path(dir_okay=False), default=None,
              help="Settings file (default: $GEOSCOUT_CONFIG, else ./geoscout.yaml).")
@click.option("-v", "--verbose", is_flag=True, help="Show the assets' progress logs.")
@click.pass_context
def cli(ctx: click.Context, config: str | None, verbose: bool) -> None:
    """Build image-geolocation datasets and models (a Dagster asset graph)."""
    if config:
        os.environ["GEOSCOUT_CONFIG"] = str(Path(config).resolve())
    ctx.obj = {"verbose": verbose}


@cli.command()
@click.option("--preset", type=click.Choice(["demo", "local", "mapillary", "streetview"]),
              default="local", show_default=True, help="Starter settings.")
@click.option("--path", "path", type=click.Path(dir_okay=False), default="geoscout.yaml",
              show_default=True, help="Where to write it.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(preset: str, path: str, force: bool) -> None:
    """Write a commented starter settings file."""
    from pipeline.commands.init import write_starter

    written = write_starter(Path(path), preset, force)
    click.echo(f"wrote {written} ({preset}); edit it, then: geoscout run grid")


@cli.command()
@click.pass_context
def status(ctx: click.Context) -> None:
    """Settings in use, crawl cells, assets and latest runs."""
    from pipeline.commands.status import print_status
    from pipeline.config_file import config_path

    print_status(_session(ctx), config_path())


@cli.group(cls=_Group)
def cells() -> None:
    """Register and list crawl cells (dynamic partitions of the per-cell assets)."""


@cells.command("add")
@click.argument("cell_ids", nargs=-1)
@click.option("--grid", "from_grid", is_flag=True,
              help="Every land cell of the materialized grid at the crawl level.")
@click.pass_context
def cells_add(ctx: click.Context, cell_ids: tuple[str, ...], from_grid: bool) -> None:
    """Register crawl cells (quadtree ids at the crawl level) in the instance."""
    from pipeline.commands.runs import add_cells

    new = add_cells(_session(ctx), cell_ids, from_grid)
    click.echo(f"registered {len(new)} new crawl cells" + (f": {' '.join(new)}" if new else ""))


@cells.command("list")
@click.pass_context
def cells_list(ctx: click.Context) -> None:
    """Registered crawl cells, whether every source crawled them, and where they are."""
    from pipeline.commands.runs import cell_places_list

    rows = cell_places_list(_session(ctx))
    for cell, done, place in rows:
        click.echo(f"{cell}\t{'crawled' if done else 'pending'}\t{place}")
    click.echo(f"{len(rows)} cells, {sum(d for _, d, _ in rows)} crawled", err=True)


@cli.group(cls=_Group)
def run() -> None:
    """Launch a job on the Dagster instance (runs show in the UI)."""


@run.command("grid")
@click.pass_context
def run_grid(ctx: click.Context) -> None:
    """Land polygons and grid for the configured region."""
    from pipeline.commands.runs import execute

    execute(_session(ctx), "grid_job")


@run.command("crawl")
@click.argument("cell_ids", nargs=-1)
@click.option("--again", is_flag=True, help="Crawl cells that were crawled already.")
@click.pass_context
def run_crawl(ctx: click.Context, cell_ids: tuple[str, ...], again: bool) -> None:
    """Crawl registered cells (default: those not crawled yet) in batched runs."""
    from pipeline.commands.runs import run_crawl as crawl

    crawl(_session(ctx), cell_ids, again)


@run.command("dataset")
@click.pass_context
def run_dataset(ctx: click.Context) -> None:
    """Merge the manifests; build splits, hierarchy, shards, dataset_level_<L>."""
    from pipeline.commands.runs import execute, latest_metadata, print_metadata

    session = _session(ctx)
    execute(session, "dataset_job")
    import dagster as dg

    print_metadata(latest_metadata(session, dg.AssetKey("shards")),
                   ["samples", "shards", "num_classes"])


@run.command("train")
@click.pass_context
def run_train(ctx: click.Context) -> None:
    """Train a model on the current shards (a new models/<run>/ folder)."""
    from pipeline.commands.runs import TRAINED_MODEL, execute, latest_metadata, print_metadata

    session = _session(ctx)
    execute(session, "training_job", asset_selection=[TRAINED_MODEL])
    metadata = latest_metadata(session, TRAINED_MODEL)
    print_metadata(metadata, ["run_folder", "model_path", "epochs_run", "train_seconds",
                              *sorted(k for k in metadata if k.startswith("val_top1"))])


@run.command("evaluate")
@click.pass_context
def run_evaluate(ctx: click.Context) -> None:
    """Evaluate the latest trained model on the test split."""
    from pipeline.commands.runs import (
        EVALUATION_REPORT,
        execute,
        latest_metadata,
        print_metadata,
    )

    session = _session(ctx)
    execute(session, "training_job", asset_selection=[EVALUATION_REPORT])
    metadata = latest_metadata(session, EVALUATION_REPORT)
    print_metadata(metadata, ["report_path", "n_test",
                              *sorted(k for k in metadata if k.startswith("top1_level"))])


# Delegated commands that take --data-root: the settings file's data root by default.
DATA_ROOT_COMMANDS = {"lineage"}


def _settings_data_root() -> list[str]:
    """``["--data-root", <settings.data_root>]`` when a settings file sets it, else []."""
    from pipeline.config_file import config_path, read_file

    path = config_path()
    settings = (read_file(path).get("settings") or {}) if path else {}
    root = settings.get("data_root") if isinstance(settings, dict) else None
    return ["--data-root", str(root)] if root else []


def _delegate(name: str, module: str, text: str) -> click.Command:
    """A command that hands its arguments to ``module.cli`` (its own argparse parser)."""

    @click.command(name, help=f"{text} (see `geoscout {name} -h`)", add_help_option=False,
                   context_settings={"ignore_unknown_options": True,
                                     "allow_extra_args": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def command(args: tuple[str, ...]) -> None:
        ensure_dagster_home()
        argv = list(args)
        if name in DATA_ROOT_COMMANDS and not any(a.startswith("--data-root") for a in argv):
            argv += _settings_data_root()
        code = int(importlib.import_module(module).cli(argv) or 0)
        if code:
            sys.exit(code)
    return command


for _name, (_module, _text) in COMMANDS.items():
    cli.add_command(_delegate(_name, _module, _text))


def main(argv: list[str] | None = None) -> int:
    """Entry point (``geoscout``): click's exit status as an int."""
    if not (sys.argv[1:] if argv is None else argv):
        argv = ["--help"]  # bare `geoscout`: the help, exit status 0
    try:
        cli.main(args=argv, prog_name="geoscout", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.Abort:
        return 1
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
