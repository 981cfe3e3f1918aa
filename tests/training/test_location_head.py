"""The location head and estimator: offsets inside the top cell (OSV-5M's hybrid head), an
estimate that never averages across continents, and the choice made on the validation fold."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from training.bundle import load_bundle
from training.geo import haversine_km
from training.hierarchy import ClassTables, LevelTable
from training.inference import (
    LOCATION_METHODS,
    RetrievalIndex,
    apply_offsets,
    cell_sizes_deg,
    estimate_locations,
    offset_targets,
)
from training.losses import OffsetLoss
from training.validation import DENSITY_RADII, ValOutputs, choose_location_method

# level 2 cells: "21" (Europe: lat 0..45, lon -90..0) and "13" (lat -45..0, lon 90..180)
EUROPE_AUS = LevelTable(2, ("21", "13"), ((30.0, -40.0), (-25.0, 135.0)), (-1, -1))
TABLES = ClassTables((EUROPE_AUS,))


def test_cell_sizes_follow_the_quadtree():
    assert cell_sizes_deg(["", "0", "0312"]).tolist() == [[180.0, 360.0], [90.0, 180.0],
                                                          [11.25, 22.5]]


def test_offsets_round_trip_across_the_antimeridian():
    cents = torch.tensor([[10.0, 179.0], [-30.0, -40.0]], dtype=torch.float64)
    sizes = torch.tensor([[11.25, 22.5], [45.0, 90.0]], dtype=torch.float64)
    true = torch.tensor([[12.0, -178.0], [-20.0, -10.0]], dtype=torch.float64)
    off = offset_targets(true, cents, sizes)
    assert off[0].tolist() == pytest.approx([2.0 / 11.25, 3.0 / 22.5])  # east across 180
    assert torch.allclose(apply_offsets(cents, sizes, off), true)


def test_hesitant_model_is_not_placed_between_continents():
    probs = torch.tensor([[0.55, 0.45]])
    mean = estimate_locations(probs, EUROPE_AUS, "weighted_mean")
    top = estimate_locations(probs, EUROPE_AUS, "centroid")
    offsets = torch.tensor([[[0.2, -0.1], [0.0, 0.0]]])
    refined = estimate_locations(probs, EUROPE_AUS, "regression", offsets=offsets)
    europe = torch.tensor([30.0, -40.0], dtype=torch.float64)
    assert top[0].tolist() == europe.tolist()
    assert refined[0].tolist() == pytest.approx([30.0 + 0.2 * 45.0, -40.0 - 0.1 * 90.0])
    for lat, lon in EUROPE_AUS.centroids_deg:  # the weighted mean lands far from both cells
        assert float(haversine_km(mean[0, 0], mean[0, 1], lat, lon)) > 2500
    with pytest.raises(ValueError, match="needs the model's offsets"):
        estimate_locations(probs, EUROPE_AUS, "regression")
    with pytest.raises(ValueError, match="unknown location method"):
        estimate_locations(probs, EUROPE_AUS, "median")


def test_offset_loss_is_zero_for_the_true_offset_and_grows_away_from_it():
    loss = OffsetLoss(TABLES)
    true = torch.tensor([[35.0, -50.0]], dtype=torch.float64)
    labels = torch.tensor([0])
    exact = torch.zeros(1, 2, 2)
    exact[0, 0] = torch.tensor([5.0 / 45.0, -10.0 / 90.0])
    assert float(loss(exact, labels, true)) == pytest.approx(0.0, abs=1e-7)
    assert float(loss(torch.zeros(1, 2, 2), labels, true)) > 0.0


def outputs_near_centroids(offsets_informative: bool) -> ValOutputs:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (200,), generator=g)
    cents = EUROPE_AUS.centroid_tensor()[labels]
    sizes = cell_sizes_deg(EUROPE_AUS.cell_ids)[labels]
    true_off = (torch.rand(200, 2, generator=g, dtype=torch.float64) - 0.5) * 0.6
    true = apply_offsets(cents, sizes, true_off)
    offsets = torch.zeros(200, 2, 2)
    if offsets_informative:
        offsets[torch.arange(200), labels] = true_off.float()
    logits = torch.nn.functional.one_hot(labels, 2).float() * 3.0
    return ValOutputs([logits], labels[:, None], true, offsets)


def test_validation_picks_the_estimator_with_the_lowest_median():
    good = choose_location_method(outputs_near_centroids(True), TABLES, [1.0])
    assert good["method"] == "regression"
    assert good["validation_median_km"]["regression"] < good["validation_median_km"]["centroid"]
    flat = choose_location_method(outputs_near_centroids(False), TABLES, [1.0])
    assert flat["method"] == "centroid"  # a tie goes to the simpler estimator
    assert set(flat["validation_median_km"]) == set(LOCATION_METHODS) - {"retrieval", "density"}


def test_trained_model_records_its_location_estimator_and_calibration(tiny_model):
    bundle = load_bundle(tiny_model)
    assert bundle.model.offsets is not None
    location = bundle.location
    assert location["method"] in LOCATION_METHODS
    assert location["validation_median_km"][location["method"]] == \
        min(location["validation_median_km"].values())
    assert len(bundle.calibration) == len(bundle.tables.levels)
    for level in bundle.calibration:  # the tiny validation fold is too small to fit on
        assert level["n"] < 200 and not level["fitted"] and level["temperature"] == 1.0
        assert "fewer than the 200 needed" in level["reason"]


def test_retrieval_takes_the_most_similar_training_image_of_the_top_cell():
    index = RetrievalIndex(
        embeddings=torch.nn.functional.normalize(torch.tensor(
            [[1.0, 0.0], [0.0, 1.0], [1.0, 0.1]]), dim=-1),
        lat_lon_deg=torch.tensor([[40.0, -10.0], [20.0, -80.0], [-30.0, 120.0]]),
        labels=torch.tensor([0, 0, 1]))
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.2, 0.8]])
    queries = torch.tensor([[0.1, 2.0], [3.0, 0.2], [0.0, 1.0]])
    where = estimate_locations(probs, EUROPE_AUS, "retrieval", embeddings=queries, index=index)
    # query 2 is most like image 2 overall, but image 2 is not in its top cell
    assert where.tolist() == [[20.0, -80.0], [40.0, -10.0], [-30.0, 120.0]]
    with pytest.raises(ValueError, match="retrieval index"):
        estimate_locations(probs, EUROPE_AUS, "retrieval")


def test_trained_model_keeps_a_retrieval_index_of_its_training_images(tiny_model):
    bundle = load_bundle(tiny_model)
    assert bundle.retrieval is not None
    n = len(bundle.retrieval.labels)
    assert bundle.retrieval.embeddings.shape == (n, bundle.model.heads[0].in_features)
    assert "retrieval" in bundle.location["validation_median_km"]
    assert bundle.location["retrieval_index"] == f"{n} training images"


def two_towns_index() -> RetrievalIndex:
    """Class 0 (Europe) has a big town (12 images near 40N 10W) and a small one 1,100 km away
    (6 images near 30N 0E): its centroid lies between them, in neither."""
    g = torch.Generator().manual_seed(1)
    big = torch.tensor([40.0, -10.0]) + 0.05 * torch.randn(12, 2, generator=g)
    small = torch.tensor([30.0, 0.0]) + 0.05 * torch.randn(6, 2, generator=g)
    where = torch.cat([big, small, torch.tensor([[-25.0, 135.0]])])
    looks = torch.tensor([[1.0, 0.0]] * 12 + [[0.0, 1.0]] * 7)  # the small town looks different
    return RetrievalIndex(looks, where, torch.tensor([0] * 18 + [1]))


def test_density_picks_the_town_with_most_probability_not_the_point_between_towns():
    index = replace(two_towns_index(), radius_km=50.0)
    table = LevelTable(2, ("21", "13"), ((36.8, -6.5), (-25.0, 135.0)), (-1, -1))
    probs = torch.tensor([[0.9, 0.1], [0.3, 0.7]])
    where = estimate_locations(probs, table, "density", index=index)
    assert float(haversine_km(where[0, 0], where[0, 1], 40.0, -10.0)) < 20  # the big town
    assert where[1].tolist() == [-25.0, 135.0]  # the other class's only training image
    with pytest.raises(ValueError, match="needs a radius"):
        estimate_locations(probs, table, "density", index=two_towns_index())
    with pytest.raises(ValueError, match="retrieval index"):
        estimate_locations(probs, table, "density")


def test_validation_chooses_density_and_its_radius_when_places_cluster():
    index = two_towns_index()
    table = LevelTable(2, ("21", "13"), ((36.8, -6.5), (-25.0, 135.0)), (-1, -1))
    g = torch.Generator().manual_seed(2)
    truth = torch.tensor([40.0, -10.0], dtype=torch.float64) + 0.05 * torch.randn(
        40, 2, generator=g, dtype=torch.float64)  # validation images in the big town
    outputs = ValOutputs([torch.tensor([[3.0, 0.0]]).repeat(40, 1)],
                         torch.zeros(40, 1, dtype=torch.long), truth, None,
                         torch.tensor([[0.0, 1.0]]).repeat(40, 1))  # look like the small one
    chosen = choose_location_method(outputs, ClassTables((table,)), [1.0], index)
    km = chosen["validation_median_km"]
    assert chosen["method"] == "density" and km["density"] < 20 and km["centroid"] > 300
    assert km["retrieval"] > 1000  # appearance alone led to the wrong town
    assert chosen["density_radius_km"] in {round(f * km["centroid"], 3) for f in DENSITY_RADII}


def test_every_location_method_can_be_recorded_and_asked_for():
    from training.provenance import LOCATIONS, recorded_location

    assert set(LOCATION_METHODS) <= set(LOCATIONS)
    for method in LOCATION_METHODS:  # the report and predict use what training chose
        assert recorded_location({}, {"method": method}) == method
