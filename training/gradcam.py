"""Grad-CAM (Selvaraju et al. 2017): where the model looks for a class.

Channel weights are the spatially averaged gradients of the class score with respect to the
backbone's last feature map (``cam_layer()``); the map is ReLU(sum of weighted channels),
upsampled to the input and scaled to [0, 1] per image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from geo_assets.plots import heatmap_overlay
from training.models import GeoModel


def grad_cam(model: GeoModel, images: torch.Tensor, level_index: int = 0,
             classes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W) heatmaps in [0, 1] and the explained classes (default: the predicted ones)."""
    store: dict[str, torch.Tensor] = {}

    def keep(_module, _inputs, output):
        output.retain_grad()
        store["features"] = output

    handle = model.backbone.cam_layer().register_forward_hook(keep)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            x = images.detach().clone().requires_grad_(True)  # grads flow even when frozen
            logits = model(x)[level_index]
            if classes is None:
                classes = logits.argmax(dim=-1)
            model.zero_grad(set_to_none=True)
            logits.gather(1, classes[:, None]).sum().backward()
        features, grads = store["features"], store["features"].grad
    finally:
        handle.remove()
        model.train(was_training)
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * features).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).max(dim=1).values.clamp(min=1e-12)[:, None, None]
    return (cam / peak).detach(), classes.detach()


def overlay(image: torch.Tensor, heatmap: torch.Tensor, mean, std, alpha: float = 0.45):
    """(3, H, W) normalised image + (H, W) map -> (H, W, 3) float RGB in [0, 1] for plotting."""
    rgb = (image.cpu() * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None])
    rgb = rgb.clamp(0, 1).permute(1, 2, 0).numpy()
    return heatmap_overlay(rgb, heatmap.cpu().numpy(), alpha)
