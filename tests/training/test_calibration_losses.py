"""Temperature scaling, label smoothing and haversine label smoothing."""

from __future__ import annotations

import pytest
import torch

from training.calibration import fit_temperature, fit_temperatures, nll
from training.losses import HierarchicalLoss, auto_tau_km, haversine_targets
from training.schedule import warmup_cosine


def overconfident(n: int = 2000, classes: int = 5, seed: int = 0):
    """Logits 4x too sharp for data whose labels follow softmax(true logits)."""
    g = torch.Generator().manual_seed(seed)
    true_logits = torch.randn(n, classes, generator=g) * 1.5
    labels = torch.multinomial(torch.softmax(true_logits, -1), 1, generator=g)[:, 0]
    return true_logits * 4.0, labels


def test_temperature_scaling_lowers_nll_on_a_miscalibrated_example():
    logits, labels = overconfident()
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(4.0, rel=0.15)
    assert nll(logits, labels, t) < 0.8 * nll(logits, labels)
    assert (logits / t).argmax(-1).equal(logits.argmax(-1))  # accuracy unchanged


def test_one_temperature_per_level():
    a, la = overconfident(seed=1)
    b, lb = overconfident(seed=2)
    temps = fit_temperatures([a, b / 8.0], torch.stack([la, lb], dim=1))
    assert temps[0] > 2.0 and temps[1] < 1.0  # the second level is under-confident


def test_haversine_targets_decay_with_distance():
    centroids = torch.tensor([[0.0, 0.0], [0.0, 10.0], [0.0, 40.0], [0.0, 120.0]],
                             dtype=torch.float64)
    truth = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    q = haversine_targets(truth, torch.tensor([0]), centroids, tau_km=500.0)[0]
    assert float(q.sum()) == pytest.approx(1.0)
    assert q[0] > q[1] > q[2] > q[3]
    assert float(q[3]) < 1e-6
    # a huge tau spreads the mass; a tiny one is one-hot on the true class
    wide = haversine_targets(truth, torch.tensor([0]), centroids, tau_km=1e7)[0]
    assert wide.tolist() == pytest.approx([0.25] * 4, abs=1e-3)
    sharp = haversine_targets(truth, torch.tensor([0]), centroids, tau_km=1.0)[0]
    assert float(sharp[0]) == pytest.approx(1.0)


def test_hierarchical_loss_modes():
    from test_inference import TABLES

    logits = [torch.zeros(2, c) for c in TABLES.num_classes]
    labels = torch.tensor([[0, 1, 1], [1, 2, 3]])
    truth = torch.tensor([[0.0, -60.0], [10.0, 100.0]], dtype=torch.float64)
    plain = HierarchicalLoss(TABLES)(logits, labels)
    expected = sum(torch.log(torch.tensor(float(c))) for c in TABLES.num_classes)
    assert float(plain) == pytest.approx(float(expected))  # uniform logits: sum of log C
    smooth = HierarchicalLoss(TABLES, tau_km="auto")
    assert all(t > 0 for t in smooth.taus)
    assert float(smooth(logits, labels, truth)) == pytest.approx(float(expected))
    weighted = HierarchicalLoss(TABLES, level_weights=[1.0, 0.0, 0.0])(logits, labels)
    assert float(weighted) == pytest.approx(float(torch.log(torch.tensor(2.0))))
    assert auto_tau_km(TABLES.levels[1].centroid_tensor()) > 1000


def test_warmup_then_cosine():
    assert warmup_cosine(0, 10, 100) == pytest.approx(0.1)
    assert warmup_cosine(9, 10, 100) == pytest.approx(1.0)
    assert warmup_cosine(10, 10, 100) == pytest.approx(1.0)
    assert warmup_cosine(55, 10, 100) == pytest.approx(0.5)
    assert warmup_cosine(100, 10, 100, min_ratio=0.1) == pytest.approx(0.1)


def test_temperature_needs_enough_validation_images():
    from training.calibration import calibrate_level

    logits, labels = overconfident(n=150)
    report = calibrate_level(logits, labels, min_samples=200)
    assert report["temperature"] == 1.0 and not report["fitted"]
    assert "150 validation images, fewer than the 200" in report["reason"]
    report = calibrate_level(*overconfident(n=2000), min_samples=200)
    assert report["fitted"] and report["temperature"] > 2.0
    assert report["nll_after"] < report["nll_before"] and report["ece_after"] <= report["ece_before"]


def test_temperature_that_worsens_held_out_nll_is_not_kept():
    """Even rows over-confident, odd rows under-confident: a temperature fitted on one half
    makes the other half worse, so T stays 1 and the report says why."""
    from training.calibration import calibrate_level

    sharp, labels = overconfident(n=2000, seed=3)
    logits = sharp.clone()
    logits[1::2] = sharp[1::2] / 16.0  # true logits / 4: under-confident
    report = calibrate_level(logits, labels, min_samples=200)
    assert report["temperature"] == 1.0 and not report["fitted"]
    assert report["nll_after"] >= report["nll_before"]
    assert "did not lower held-out validation NLL" in report["reason"]
