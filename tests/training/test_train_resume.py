"""Training on the tiny shard dataset: it learns; a run interrupted mid-epoch and resumed from
its checkpoint ends exactly where an uninterrupted run ends (deterministic CPU settings)."""

from __future__ import annotations

import json

import pytest
import torch

from training.bundle import load_bundle
from training.config import TrainConfig, from_namespace
from training.train import get_args_parser, main


@pytest.fixture
def deterministic():
    threads = torch.get_num_threads()
    yield
    torch.use_deterministic_algorithms(False)
    torch.set_num_threads(threads)


def config(dataset, out, **overrides) -> TrainConfig:
    args = get_args_parser().parse_args([
        "--dataset", str(dataset), "--output-dir", str(out), "--epochs", "3",
        "--batch-size", "8", "--workers", "0", "--image-size", "32", "--device", "cpu",
        "--threads", "1", "--deterministic", "--seed", "3", "--checkpoint-every", "5",
        "--haversine-tau-km", "auto", "--patience", "0", "--backbone", "tiny",
        "--no-pretrained", "--lr", "2e-3"])
    return from_namespace(args).model_copy(update=overrides)


def test_interrupted_and_resumed_run_matches_uninterrupted(tiny_dataset, tmp_path,
                                                           deterministic):
    dataset = tiny_dataset / "datasets" / "dataset.json"
    full = main(config(dataset, tmp_path / "full"))
    assert main(config(dataset, tmp_path / "cut", stop_after_steps=11)) is None  # mid-epoch 1
    saved = torch.load(tmp_path / "cut" / "checkpoint.pth", weights_only=False)
    assert saved["state"]["global_step"] == 11 and saved["state"]["step_in_epoch"] == 3
    assert not (tmp_path / "cut" / "model.pt").exists()
    resumed = main(config(dataset, tmp_path / "cut", resume="auto"))

    assert resumed["validation"] == full["validation"]
    assert resumed["temperatures"] == full["temperatures"]
    assert resumed["history"] == full["history"]
    a = load_bundle(tmp_path / "full" / "model.pt").model.state_dict()
    b = load_bundle(tmp_path / "cut" / "model.pt").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["n_train_images"] == full["n_train_images"] > 0

    # it learned: the colour-coded tiny set is easy, chance is 1/4 and 1/8
    coarse, fine = full["validation"]
    assert coarse["top1"] >= 0.7 and fine["top1"] >= 0.5
    card = json.loads((tmp_path / "full" / "model_card.json").read_text())
    assert card["manifest_sha256"] == "tiny-manifest" and card["config"]["seed"] == 3


def test_early_stopping_uses_validation_and_never_reads_test(tiny_dataset, tmp_path,
                                                             deterministic, monkeypatch):
    from training import data

    splits = []
    real = data.make_loader
    monkeypatch.setattr(data, "make_loader",
                        lambda *a, **k: splits.append((k["split"], k["folds"])) or real(*a, **k))
    card = main(config(tiny_dataset / "datasets" / "dataset.json", tmp_path / "es",
                       epochs=6, patience=1, lr=0.0, min_delta=1.0))
    assert card["stopped_early"] and card["epochs_run"] == 2  # lr 0: nothing improves by 1 nat
    assert all(split == "train" for split, _ in splits)
    assert (("train", [0]) in splits) and (("train", [1]) in splits)
