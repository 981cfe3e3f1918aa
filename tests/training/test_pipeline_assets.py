"""trained_model through Dagster Pipes with torchrun (2 CPU processes, gloo): one
materialization with lineage metadata; then evaluation_report on the test split."""

from __future__ import annotations

import json

import dagster as dg
import pyarrow.parquet as pq

from pipeline.assets.evaluate import evaluation_report
from pipeline.assets.train import trained_model
from pipeline.constants import GPU_TAG
from pipeline.profiles import DEMO_TRAINING
from pipeline.resources import GeoscoutSettings, TrainingSettings


def test_torchrun_two_processes_reports_once_then_evaluates(tiny_dataset):
    resources = {"settings": GeoscoutSettings(data_root=str(tiny_dataset)),
                 "training": TrainingSettings(**{
                     **DEMO_TRAINING, "nproc_per_node": 2, "image_size": 32, "batch_size": 8,
                     "epochs": 2, "workers": 0, "device": "cpu", "eval_batch_size": 32}),
                 "pipes_client": dg.PipesSubprocessClient()}
    with dg.instance_for_test() as instance:
        result = dg.materialize([trained_model, evaluation_report], resources=resources,
                                instance=instance, selection=[trained_model, evaluation_report])
        assert result.success
        trained = [m for m in result.get_asset_materialization_events()
                   if m.asset_key == dg.AssetKey("trained_model")]
        assert len(trained) == 1  # only rank 0 reported
        meta = trained[0].materialization.metadata
        assert meta["world_size"].value == 2
        assert meta["lineage/manifest_hash"].value == "tiny-manifest"
        assert set(meta["lineage/shards"].value["names"]) == {
            "train-1-000000", "train-1-000001", "train-0-000000", "train-0-000001"}
        folder = f"default-{result.run_id[:8]}"  # versioned per run (pipeline/assets/train.py)
        assert meta["run_folder"].value == folder
        card = json.loads((tiny_dataset / "models" / folder / "model_card.json").read_text())
        assert card["dagster_run_id"] == result.run_id == meta["lineage/dagster_run"].value
        ids = pq.read_table(meta["train_image_ids"].value).column("image_id").to_pylist()
        assert ids and all(i.startswith("local:train1-") for i in ids)  # fold 0 validates
        report = result.asset_materializations_for_node("evaluation_report")[0].metadata
        assert report["n_test"].value == 64
        assert 0.0 <= report["top1_coarsest"].value <= 1.0
        metrics = json.loads((tiny_dataset / "reports" / folder / "metrics.json").read_text())
        assert set(metrics["distance"]) == {"hierarchical", "flat", "hierarchical_top1"}
    assert trained_model.op.tags.get("gpu") == GPU_TAG["gpu"]
    assert next(iter(trained_model.specs)).automation_condition is None
