"""`geoscout demo`'s own logic (the whole run is too slow for the test suite; see README)."""

from __future__ import annotations

import pytest

from geo_assets.errors import InputError
from geo_assets.storage import DataRoot
from pipeline import demo_run


def test_a_data_root_holds_one_demo_world(tmp_path):
    root = DataRoot(str(tmp_path / "data"))
    demo_run._check_world(root, 0, "tiny")  # first run writes the marker
    demo_run._check_world(root, 0, "tiny")  # same world: fine
    with pytest.raises(InputError, match="--fresh"):
        demo_run._check_world(root, 1, "tiny")


def test_unknown_preset_is_rejected(capsys):
    with pytest.raises(SystemExit):
        demo_run.cli(["--preset", "huge"])
    assert "invalid choice" in capsys.readouterr().err


@pytest.mark.slow
def test_geoscout_demo_tiny_runs_the_whole_graph(tmp_path, monkeypatch, capsys):
    """The README's main job on the tiny world: grid to report, on a real instance."""
    import dagster as dg

    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    root = tmp_path / "data"
    assert demo_run.cli(["--preset", "tiny", "--data-root", str(root), "-q"]) == 0
    out = capsys.readouterr().out
    reports = list((root / "reports").glob("default-*/report.html"))  # one folder per run
    assert len(reports) == 1
    report = reports[0]
    assert f"Report: {report}" in out and report.exists()
    assert "top1_coarsest" in out and "skipped" not in out
    with dg.DagsterInstance.get() as instance:
        jobs = {r.job_name for r in instance.get_runs()}
        assert jobs == {"grid_job", "ingest_cells_job", "dataset_job", "training_job"}
        assert instance.get_latest_materialization_event(dg.AssetKey("evaluation_report"))
