"""Model runs are versioned: a second training run writes a new models/<name>-<run>/ folder
and leaves the first one (and its lineage) in place; evaluation reads the model the latest
trained_model materialization produced; the real materialization carries the lineage
metadata and the link to its Dagster run."""

from __future__ import annotations

import dagster as dg
import pytest

from pipeline.assets.evaluate import evaluation_report
from pipeline.assets.train import trained_model
from pipeline.profiles import DEMO_TRAINING
from pipeline.resources import build_resources
from tests.training.tiny_dataset import build_tiny_dataset

TRAINING = {**DEMO_TRAINING, "run_name": "mine", "image_size": 32, "batch_size": 8,
            "epochs": 1, "workers": 0, "device": "cpu", "eval_batch_size": 32}


@pytest.mark.slow
def test_two_runs_two_models_evaluation_reads_the_latest(tmp_path):
    build_tiny_dataset(tmp_path / "datasets")
    resources = build_resources({"settings": {"data_root": str(tmp_path)},
                                 "training": TRAINING})
    with dg.instance_for_test() as instance:
        runs = []
        for _ in range(2):
            result = dg.materialize([trained_model], resources=resources, instance=instance)
            assert result.success
            meta = result.asset_materializations_for_node("trained_model")[0].metadata
            runs.append((result.run_id, meta))
        folders = [meta["run_folder"].value for _, meta in runs]
        assert folders == [f"mine-{run_id[:8]}" for run_id, _ in runs]
        for folder in folders:  # the first model is still there
            assert (tmp_path / "models" / folder / "model.pt").is_file()
        run_id, meta = runs[-1]
        assert meta["lineage/dagster_run"].value == run_id
        assert {"lineage/manifest_hash", "lineage/shards", "lineage/model_card"} <= set(meta)

        result = dg.materialize([trained_model, evaluation_report], resources=resources,
                                instance=instance, selection=[evaluation_report])
        report = result.asset_materializations_for_node("evaluation_report")[0].metadata
        assert report["model"].value == folders[-1]
        assert (tmp_path / "reports" / folders[-1]).is_dir()
