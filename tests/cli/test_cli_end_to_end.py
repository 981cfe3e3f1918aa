"""End to end with the CLI and a settings file only (no Python): real Street View photos from
../shared/data/real/worldwide_streetview through the local-folder source, levels [1, 2, 3].
The CI example's script (docs/examples/ci.sh) does grid -> cells -> crawl -> dataset; then
train, evaluate and lineage. The same flow again through ``dg launch``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from pipeline.sensors import PLACES_TAG, RANGE_START_TAG
from tests.conftest import PROJECT_ROOT, shared_data_path

GEOSCOUT = [sys.executable, "-m", "pipeline.cli"]
DG = str(Path(sys.executable).parent / "dg")


def settings_file(tmp_path: Path, photos: Path, crawl_level: int) -> Path:
    path = tmp_path / "geoscout.yaml"
    path.write_text(f"""\
settings:
  data_root: {tmp_path / 'data'}
  region: world
  sources: [local]
  grid_max_level: {crawl_level}
  crawl_level: {crawl_level}
  images_per_cell: 1000
local_folder:
  folder: {photos}
  sidecar: {photos / 'labels.csv'}
dataset:
  levels: [1, 2, 3]
  min_images: 2
  test_fraction: 0.2
training:
  run_name: e2e
  backbone: tiny
  pretrained: false
  image_size: 32
  batch_size: 16
  epochs: 1
  workers: 0
  threads: 1
  device: cpu
  eval_batch_size: 64
""")
    return path


def env_for(tmp_path: Path, config: Path) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").touch()
    return {**os.environ, "DAGSTER_HOME": str(home), "GEOSCOUT_CONFIG": str(config),
            "GEOSCOUT": " ".join(GEOSCOUT), "PYTHONWARNINGS": "ignore"}


def call(cmd: list[str], env: dict, timeout: int = 600) -> str:
    proc = subprocess.run(cmd, check=False, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, (cmd, proc.returncode, proc.stdout[-3000:],
                                  proc.stderr[-3000:])
    return proc.stdout


def metadata_line(out: str, name: str) -> str:
    return next(line.split(None, 1)[1] for line in out.splitlines()
                if line.strip().startswith(name + " "))


@pytest.mark.slow
def test_cli_only_real_photos(tmp_path):
    photos = shared_data_path("real", "worldwide_streetview")
    env = env_for(tmp_path, settings_file(tmp_path, photos, crawl_level=2))
    out = call(["bash", str(PROJECT_ROOT / "docs" / "examples" / "ci.sh")], env)
    assert "registered 16 new crawl cells" in out
    assert "dataset_level_2:" in out and "dataset_job: run" in out
    listed = call([*GEOSCOUT, "cells", "list"], env)
    assert listed.count("\tcrawled") == 16
    rows = [line.split("\t") for line in listed.splitlines()]
    assert all(len(r) == 3 and "(lat " in r[2] for r in rows), rows  # each cell's place
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        crawls = [r for r in instance.get_runs() if RANGE_START_TAG in r.tags]
        assert crawls and all(r.tags.get(PLACES_TAG) for r in crawls)  # runs name their places
    model = metadata_line(call([*GEOSCOUT, "run", "train"], env), "run_folder")
    assert model.startswith("e2e-")
    report = metadata_line(call([*GEOSCOUT, "run", "evaluate"], env), "report_path")
    assert Path(report) == tmp_path / "data" / "reports" / model / "report.html"
    assert Path(report).is_file()
    status = call([*GEOSCOUT, "status"], env)
    assert "levels          [1, 2, 3]" in status
    assert "dataset_level_2 " in status and "never" not in status.split("trained_model")[1]
    manifest = pl.read_parquet(tmp_path / "data" / "manifests" / "image_manifest.parquet")
    image = manifest.filter(pl.col("kept"))["image_id"][0]
    # lineage used to abort at exit (status 134) in about half the runs on this data
    for what in [["model", model], ["image", image]] * 5:
        assert what[1] in call([*GEOSCOUT, "lineage", *what], env)


@pytest.mark.slow
def test_same_flow_through_dg_launch(tmp_path):
    photos = shared_data_path("real", "worldwide_streetview")
    env = env_for(tmp_path, settings_file(tmp_path, photos, crawl_level=1))
    call([DG, "launch", "--job", "grid_job"], env)
    assert "registered 4 new crawl cells" in call([*GEOSCOUT, "cells", "add", "--grid"], env)
    for cell in "0123":  # the per-cell backfill policy batches cells: one partition per launch
        call([DG, "launch", "--job", "ingest_cells_job", "--partition", cell], env)
    call([DG, "launch", "--job", "dataset_job"], env)
    call([DG, "launch", "--assets", "trained_model"], env)
    status = call([*GEOSCOUT, "status"], env)
    assert "crawl cells     4 registered, 4 crawled" in status
    for name in ("dataset_level_2", "trained_model"):
        line = next(li for li in status.splitlines() if li.strip().startswith(name))
        assert "never" not in line
    assert list((tmp_path / "data" / "models").glob("e2e-*/model.pt"))


def test_missing_secret_is_one_line(tmp_path):
    config = tmp_path / "geoscout.yaml"
    config.write_text("settings: {sources: [mapillary], data_root: %s}\n"
                      "mapillary: {access_token: {env: GEOSCOUT_TEST_UNSET_TOKEN}}\n"
                      % (tmp_path / "data"))
    env = env_for(tmp_path, config)
    env.pop("GEOSCOUT_TEST_UNSET_TOKEN", None)
    proc = subprocess.run([*GEOSCOUT, "run", "crawl"], check=False, cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error")]
    assert errors == [("Error: GEOSCOUT_TEST_UNSET_TOKEN is not set: export it "
                      "(mapillary.access_token in the settings file reads it)")]
    assert "Traceback" not in proc.stderr


def test_a_dataset_without_kept_photos_says_why_in_one_line(tmp_path):
    """The folder set one level too deep (the sidecar's paths start with ``images/``): the
    crawl keeps nothing, and ``run dataset`` ends with one error line giving the drop
    counts instead of Dagster's "Error occurred while executing op"."""
    photos = shared_data_path("real", "worldwide_streetview")
    config = settings_file(tmp_path, photos, crawl_level=1)
    config.write_text(config.read_text().replace(f"folder: {photos}\n",
                                                 f"folder: {photos / 'images'}\n"))
    env = env_for(tmp_path, config)
    call([*GEOSCOUT, "run", "grid"], env)
    call([*GEOSCOUT, "cells", "add", "--grid"], env)
    call([*GEOSCOUT, "run", "crawl"], env)
    proc = subprocess.run([*GEOSCOUT, "run", "dataset"], check=False, cwd=PROJECT_ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    error = [line for line in proc.stderr.splitlines() if line.startswith("Error")][-1]
    assert "splits: geo_assets.errors.InputError" in error and "no kept images" in error
    assert "no_location 420" in error and "file_missing 420" in error
    assert "Error occurred while executing op" not in error
