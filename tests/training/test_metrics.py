"""Metric functions against hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from training.geo import EARTH_RADIUS_KM, geoguessr_score, haversine_km, spherical_mean_deg
from training.metrics import (
    DistanceMetrics,
    LevelMetrics,
    accuracy_within,
    calibration_bins,
    expected_calibration_error,
    per_class_scores,
)

QUARTER_KM = math.pi / 2 * EARTH_RADIUS_KM  # 10007.54 km


@pytest.mark.parametrize(("a", "b", "expected_km"), [
    ((45.0, 7.0), (45.0, 7.0), 0.0),                          # same point
    ((0.0, 0.0), (0.0, 180.0), math.pi * EARTH_RADIUS_KM),    # antipodes on the equator
    ((90.0, 0.0), (-90.0, 0.0), math.pi * EARTH_RADIUS_KM),   # pole to pole
    ((10.0, 20.0), (-10.0, -160.0), math.pi * EARTH_RADIUS_KM),  # antipodes off-axis
    ((0.0, 0.0), (0.0, 90.0), QUARTER_KM),
    ((0.0, 179.5), (0.0, -179.5), math.pi * EARTH_RADIUS_KM / 180),  # across the antimeridian
])
def test_haversine_hand_cases(a, b, expected_km):
    d = haversine_km(torch.tensor(a[0]), torch.tensor(a[1]), torch.tensor(b[0]),
                     torch.tensor(b[1]))
    assert not torch.isnan(d)
    # haversine loses digits next to the antipode (sqrt(1 - a) with a ~ 1): about 0.1 m
    assert float(d) == pytest.approx(expected_km, abs=1e-3)


def test_accuracy_radii_are_strict_at_the_edges():
    d = torch.tensor([0.0, 0.999, 1.0, 25.0, 199.99, 200.0, 750.0, 2500.0, 2500.01])
    assert accuracy_within(d, 1) == pytest.approx(2 / 9)     # 1.0 is not < 1 km
    assert accuracy_within(d, 25) == pytest.approx(3 / 9)    # 25.0 is not < 25 km
    assert accuracy_within(d, 200) == pytest.approx(5 / 9)
    assert accuracy_within(d, 750) == pytest.approx(6 / 9)
    assert accuracy_within(d, 2500) == pytest.approx(7 / 9)


def test_geoguessr_score_and_distance_ladder():
    assert float(geoguessr_score(torch.tensor(0.0))) == pytest.approx(5000.0)
    assert float(geoguessr_score(torch.tensor(1492.7))) == pytest.approx(5000 / math.e)
    m = DistanceMetrics()
    truth = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    pred = torch.tensor([[0.0, 0.0], [0.0, 90.0], [0.0, 180.0], [0.0, 180.0]],
                        dtype=torch.float64)
    m.update(pred[:2], truth[:2])  # batch size must not matter
    m.update(pred[2:], truth[2:])
    out = m.compute()
    half = math.pi * EARTH_RADIUS_KM
    assert out["mean_km"] == pytest.approx((0 + QUARTER_KM + 2 * half) / 4)
    assert out["median_km"] == pytest.approx((QUARTER_KM + half) / 2)
    assert out["acc_1km"] == 0.25 and out["acc_2500km"] == 0.25
    expected = (5000 + 5000 * math.exp(-QUARTER_KM / 1492.7)
                + 2 * 5000 * math.exp(-half / 1492.7)) / 4
    assert out["geoguessr"] == pytest.approx(expected)


def test_ece_hand_case():
    # Two bins used: confidence 0.9 (2 images, 1 right) and 0.6 (2 images, 2 right).
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.4, 0.6]])
    labels = torch.tensor([0, 1, 0, 1])
    bins = calibration_bins(probs, labels, n_bins=10)
    # |0.5 - 0.9| * 2/4 + |1.0 - 0.6| * 2/4 = 0.4
    assert expected_calibration_error(bins) == pytest.approx(0.4)
    assert bins[:, 0].sum() == 4


def test_per_class_scores_hand_case():
    # rows = true, columns = predicted
    confusion = torch.tensor([[3, 1, 0], [0, 2, 2], [0, 0, 0]])
    s = per_class_scores(confusion)
    assert s["precision"] == pytest.approx([1.0, 2 / 3, 0.0])
    assert s["recall"] == pytest.approx([0.75, 0.5, 0.0])
    assert s["f1"][0] == pytest.approx(2 * 0.75 / 1.75)
    assert s["support"] == [4, 4, 0]


def test_level_metrics_top_k_and_confusion():
    log_probs = torch.log(torch.tensor([[0.5, 0.3, 0.2], [0.2, 0.3, 0.5], [0.1, 0.6, 0.3]]))
    m = LevelMetrics(3, confusion=True)
    m.update(log_probs, torch.tensor([0, 1, 2]))
    out = m.compute()
    assert out["top1"] == pytest.approx(1 / 3)
    assert m.confusion.tolist() == [[1, 0, 0], [0, 0, 1], [0, 1, 0]]
    assert out["nll"] == pytest.approx(-(math.log(0.5) + math.log(0.3) + math.log(0.3)) / 3)


def test_spherical_mean_across_the_antimeridian():
    points = torch.tensor([[0.0, 179.0], [0.0, -179.0]], dtype=torch.float64)
    mean = spherical_mean_deg(points, torch.tensor([0.5, 0.5]))
    assert float(mean[0]) == pytest.approx(0.0, abs=1e-9)
    assert abs(float(mean[1])) == pytest.approx(180.0)
