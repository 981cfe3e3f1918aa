"""The optimizer step under a GradScaler: scale -> backward -> unscale_ -> clip -> step ->
update, clipping the unscaled gradients, one optimizer step per call."""

from __future__ import annotations

import pytest
import torch

from training import train


class RecordingScaler(torch.amp.GradScaler):
    def __init__(self, calls: list, model: torch.nn.Module) -> None:
        super().__init__("cpu", init_scale=1024.0)
        self.calls, self.model = calls, model

    def scale(self, outputs):
        self.calls.append("scale")
        return super().scale(outputs)

    def unscale_(self, optimizer):
        self.calls.append("unscale_")
        return super().unscale_(optimizer)

    def step(self, optimizer, *args, **kwargs):
        self.calls.append("step")
        return super().step(optimizer, *args, **kwargs)

    def update(self, new_scale=None):
        self.calls.append("update")
        return super().update(new_scale)


def test_scaled_step_order_and_unscaled_clipping(monkeypatch):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    x, y = torch.randn(8, 4), torch.randn(8, 2)
    reference = torch.nn.Linear(4, 2)
    reference.load_state_dict(model.state_dict())
    torch.nn.functional.mse_loss(reference(x), y).backward()
    true_norm = torch.norm(torch.stack([p.grad.norm() for p in reference.parameters()]))

    calls: list = []
    seen_norms: list = []

    def clip(params, max_norm):
        params = list(params)
        calls.append("clip")
        seen_norms.append(torch.norm(torch.stack([p.grad.norm() for p in params])))
        return torch.nn.utils.clip_grad_norm_(params, max_norm)

    monkeypatch.setattr(train, "clip_grad_norm_", clip)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    original_step = optimizer.step

    def counted_step(*args, **kwargs):
        calls.append("optimizer.step")
        return original_step(*args, **kwargs)

    optimizer.step = counted_step
    scaler = RecordingScaler(calls, model)
    loss = torch.nn.functional.mse_loss(model(x), y)
    train.optimizer_step(loss, model, optimizer, scaler, max_norm=0.05)
    assert calls == ["scale", "unscale_", "clip", "step", "optimizer.step", "update"]
    assert float(seen_norms[0]) == pytest.approx(float(true_norm), rel=1e-5)  # not x1024
    after = torch.norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert float(after) == pytest.approx(0.05, rel=1e-4)  # the step used clipped grads


def test_plain_step_clips_then_steps_once(monkeypatch):
    calls: list = []
    monkeypatch.setattr(train, "clip_grad_norm_", lambda p, n: calls.append("clip"))
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    original_step = optimizer.step
    optimizer.step = lambda *a, **k: (calls.append("step"), original_step(*a, **k))
    train.optimizer_step(model(torch.randn(2, 3)).sum(), model, optimizer, None, max_norm=1.0)
    assert calls == ["clip", "step"]
