"""Hierarchical combination, adaptive top-k and location estimates on a hand-made hierarchy."""

from __future__ import annotations

import math

import pytest
import torch

from training.hierarchy import ClassTables, LevelTable
from training.inference import (
    adaptive_top_k,
    estimate_location,
    hierarchical_log_probs,
    predict_cells,
)

# Level A: 2 classes; level B: 3 classes, parents [0, 0, 1]; level C: 4 classes, parents
# [0, 1, 2, 2] (so C's grandparents are [0, 0, 1, 1]).
TABLES = ClassTables((
    LevelTable(1, ("0", "1"), ((0.0, -90.0), (0.0, 90.0)), (-1, -1)),
    LevelTable(2, ("00", "01", "10"), ((0.0, -120.0), (0.0, -60.0), (0.0, 90.0)), (0, 0, 1)),
    LevelTable(3, ("000", "010", "100", "101"),
               ((10.0, -120.0), (10.0, -60.0), (10.0, 80.0), (10.0, 100.0)), (0, 1, 2, 2)),
))


def test_ancestors():
    assert TABLES.ancestors(2).tolist() == [[0, 0, 0], [0, 1, 1], [1, 2, 2], [1, 2, 3]]


def test_hierarchical_combination_by_hand():
    pa = torch.tensor([[0.2, 0.8]])
    pb = torch.tensor([[0.5, 0.3, 0.2]])
    pc = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    out = hierarchical_log_probs([pa.log(), pb.log(), pc.log()], TABLES)
    # level B: 0.2*0.5, 0.2*0.3, 0.8*0.2 = 0.10, 0.06, 0.16 -> / 0.32
    assert out[1].exp()[0].tolist() == pytest.approx([0.10 / 0.32, 0.06 / 0.32, 0.16 / 0.32])
    # level C: path products 0.2*0.5*0.1, 0.2*0.3*0.2, 0.8*0.2*0.3, 0.8*0.2*0.4
    raw = [0.01, 0.012, 0.048, 0.064]
    assert out[2].exp()[0].tolist() == pytest.approx([r / sum(raw) for r in raw])
    assert out[0].exp()[0].tolist() == pytest.approx([0.2, 0.8])
    # the flat argmax at level B (class 0) is overturned by the confident coarse level
    assert int(out[1].argmax()) == 2


def test_combination_uses_probabilities_not_logits():
    # Shifting a level's logits by a constant changes nothing after softmax.
    logits = [torch.tensor([[1.0, 2.0]]), torch.tensor([[0.5, 0.1, 0.3]]),
              torch.tensor([[0.0, 1.0, 2.0, 3.0]])]
    shifted = [x + 7.0 for x in logits]
    a = hierarchical_log_probs([torch.log_softmax(x, -1) for x in logits], TABLES)
    b = hierarchical_log_probs([torch.log_softmax(x, -1) for x in shifted], TABLES)
    assert torch.allclose(a[2], b[2])


def test_adaptive_top_k():
    probs = torch.tensor([[0.95, 0.03, 0.02, 0.0], [0.5, 0.3, 0.15, 0.05],
                          [0.25, 0.25, 0.25, 0.25]])
    assert adaptive_top_k(probs, mass=0.9, max_k=3) == [1, 3, 3]
    assert adaptive_top_k(probs, mass=0.8, max_k=4) == [1, 2, 4]


def test_location_estimates():
    probs = torch.tensor([[0.0, 0.0, 0.5, 0.5]])
    cents = TABLES.levels[2].centroid_tensor()
    assert estimate_location(probs, cents, "top1")[0].tolist() == pytest.approx([10.0, 80.0])
    lat, lon = estimate_location(probs, cents, "weighted", top_k=2)[0].tolist()
    assert lon == pytest.approx(90.0)
    assert lat > 10.0  # the spherical mean of two points on a parallel lies poleward of it
    with pytest.raises(ValueError, match="unknown location method"):
        estimate_location(probs, cents, "median")


def test_predict_cells_end_to_end():
    logits = [torch.tensor([[0.0, 5.0]]), torch.tensor([[0.0, 0.0, 5.0]]),
              torch.tensor([[0.0, 0.0, 0.0, math.log(3.0)]])]
    [pred] = predict_cells(logits, TABLES, mass=0.7, max_k=4, location="top1")
    assert pred.cells[0] == "101"
    assert pred.probabilities[0] == pytest.approx(0.75, abs=0.01)
    assert (pred.lat_deg, pred.lon_deg) == pytest.approx((10.0, 100.0))
