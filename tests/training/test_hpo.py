"""Hyper-parameter search on the validation fold: a 2-trial study on the tiny dataset, stored
beside the model and resumable; the Dagster asset runs the same study in-process."""

from __future__ import annotations

import json

import dagster as dg
import optuna
import torch

from training.config import TrainConfig
from training.hpo import STUDY_DB, STUDY_JSON, run_study


def base_config(dataset, out) -> TrainConfig:
    return TrainConfig(dataset=str(dataset), output_dir=str(out), epochs=1, batch_size=8,
                       workers=0, image_size=32, device="cpu", threads=1, backbone="tiny",
                       pretrained=False, run_name="hpo")


def test_two_trial_study_on_the_validation_fold(tiny_dataset, tmp_path):
    threads = torch.get_num_threads()
    out = tmp_path / "models" / "hpo" / "hpo"
    summary = run_study(base_config(tiny_dataset / "datasets" / "dataset.json", out), out, 2)
    torch.set_num_threads(threads)
    assert [t["state"] for t in summary["trials"]] == ["COMPLETE", "COMPLETE"]
    values = [t["value"] for t in summary["trials"]]
    assert summary["best_value"] == min(values) and summary["split"] == "validation fold 0"
    params = [t["params"] for t in summary["trials"]]
    assert params[0] != params[1] and set(params[0]) == {"lr", "weight_decay",
                                                         "label_smoothing", "dropout"}
    # each trial trained with its own parameters, scored on its validation NLL
    for trial in summary["trials"]:
        card = json.loads((out / "trials" / str(trial["number"]) / "model_card.json")
                          .read_text())
        assert card["config"]["lr"] == trial["params"]["lr"]
        assert card["validation"][-1]["nll"] == trial["value"]
    assert json.loads((out / STUDY_JSON).read_text())["best_params"] == summary["best_params"]
    stored = optuna.load_study(study_name="geoscout", storage=f"sqlite:///{out / STUDY_DB}")
    assert len(stored.trials) == 2


def test_tuning_asset_materializes(tiny_dataset, tmp_path):
    import shutil

    from pipeline.assets.tuning import hyperparameter_study
    from pipeline.resources import GeoscoutSettings, TrainingSettings

    root = tmp_path / "root"
    shutil.copytree(tiny_dataset / "datasets", root / "datasets")
    training = TrainingSettings(run_name="tuned", epochs=1, batch_size=8, workers=0,
                                image_size=32, device="cpu", threads=1, backbone="tiny",
                                pretrained=False)
    threads = torch.get_num_threads()
    result = dg.materialize(
        [hyperparameter_study], resources={"settings": GeoscoutSettings(data_root=str(root)),
                                           "training": training},
        run_config={"ops": {"hyperparameter_study": {"config": {"trials": 1}}}})
    torch.set_num_threads(threads)
    meta = result.asset_materializations_for_node("hyperparameter_study")[0].metadata
    assert meta["best_trial"].value == 0
    assert (root / "models" / "tuned" / "hpo" / STUDY_JSON).is_file()
    assert "| 0 | COMPLETE |" in meta["trials"].value
