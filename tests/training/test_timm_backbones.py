"""timm backbones: pretrained weights from a local safetensors file the test writes, offline
errors that name the missing file, the backbone's own normalisation, default frozen stages."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from geo_assets.errors import DataUnavailableError, InputError
from training.bundle import load_bundle, save_bundle
from training.hierarchy import ClassTables, LevelTable
from training.models import build_model, normalisation
from training.timm_backbones import default_frozen_stages

timm = pytest.importorskip("timm")


def weights_file(tmp_path, name: str, **kwargs):
    """A full timm model (with its classifier, as the hub ships it) saved as safetensors."""
    source = timm.create_model(name, pretrained=False, **kwargs)
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    return source, path


def test_local_safetensors_weights_load_offline(tmp_path):
    source, path = weights_file(tmp_path, "resnet10t")
    model = build_model("resnet10t", [3, 5], pretrained=True, weights_file=path,
                        allow_download=False, offset_head=True).eval()
    assert torch.equal(model.backbone.net.conv1[0].weight, source.conv1[0].weight)
    assert torch.equal(model.backbone.net.layer4[0].conv2.weight, source.layer4[0].conv2.weight)
    with torch.inference_mode():
        logits, offsets = model(torch.randn(2, 3, 64, 64), with_offsets=True)
    assert [tuple(x.shape) for x in logits] == [(2, 3), (2, 5)]
    assert tuple(offsets.shape) == (2, 5, 2)


def test_vit_weights_resampled_to_the_input_size_and_its_normalisation(tmp_path):
    source, path = weights_file(tmp_path, "vit_tiny_patch16_224.augreg_in21k")
    model = build_model("vit_tiny_patch16_224.augreg_in21k", [4], pretrained=True,
                        weights_file=path, image_size=64).eval()
    assert torch.equal(model.backbone.net.blocks[0].attn.qkv.weight,
                       source.blocks[0].attn.qkv.weight)
    assert normalisation(model.backbone) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    with torch.inference_mode():
        assert tuple(model(torch.randn(1, 3, 64, 64))[0].shape) == (1, 4)


def test_missing_weights_offline_name_the_repository_and_cache(tmp_path):
    with pytest.raises(DataUnavailableError, match=r"timm/resnet10t.*not in the cache .*"
                       + tmp_path.name + r".*--weights-file"):
        build_model("resnet10t", [3], pretrained=True, weights_dir=tmp_path,
                    allow_download=False)
    with pytest.raises(DataUnavailableError, match="nowhere.safetensors"):
        build_model("resnet10t", [3], pretrained=True, weights_file=tmp_path / "nowhere.safetensors")


def test_weights_of_another_model_are_refused_naming_the_file(tmp_path):
    _, path = weights_file(tmp_path, "resnet10t")
    with pytest.raises(InputError, match="resnet10t.safetensors.*does not fit.*convnext_atto"):
        build_model("convnext_atto", [3], pretrained=True, weights_file=path)


def test_foundation_towers_freeze_all_but_their_last_groups():
    assert default_frozen_stages("vit_base_patch16_clip_224.openai", 14) == 12
    assert default_frozen_stages("vit_small_patch14_dinov2.lvd142m", 14) == 12
    assert default_frozen_stages("convnext_tiny", 5) == 0
    model = build_model("resnet10t", [3], frozen_stages=None)
    assert model.frozen_stages == 0
    frozen = build_model("resnet10t", [3], frozen_stages=2).train()
    frozen(torch.randn(2, 3, 32, 32))[0].sum().backward()
    assert frozen.backbone.net.conv1[0].weight.grad is None
    assert frozen.backbone.net.layer1[0].conv1.weight.grad is None
    assert frozen.backbone.net.layer2[0].conv1.weight.grad is not None
    assert not frozen.backbone.net.bn1.training  # frozen BatchNorm keeps its statistics


def test_bundle_round_trip_keeps_backbone_normalisation_and_outputs(tmp_path):
    tables = ClassTables((LevelTable(1, ("0", "1"), ((-45.0, -90.0), (-45.0, 90.0)), (-1, -1)),))
    model = build_model("vit_tiny_patch16_224.augreg_in21k", [2], image_size=32,
                        offset_head=True).eval()
    save_bundle(tmp_path / "model.pt", model, "vit_tiny_patch16_224.augreg_in21k", tables,
                [1.0], 32, {}, {"location": {"method": "regression"}})
    bundle = load_bundle(tmp_path / "model.pt")
    assert (bundle.mean, bundle.std) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert bundle.location_method == "regression"
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        a, oa = model(x, with_offsets=True)
        b, ob = bundle.model(x, with_offsets=True)
    assert torch.equal(a[0], b[0]) and torch.equal(oa, ob)
