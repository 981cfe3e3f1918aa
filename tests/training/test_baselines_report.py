"""Baselines and verdicts: a model trained on shuffled labels is reported as not beating them,
one trained on true labels beats the majority class; the report shows the verdict table, places
instead of class indices, and no zero-support rows."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from tiny_dataset import build_tiny_dataset

from training.baselines import chance, compare, median_point
from training.config import TrainConfig
from training.evaluate import evaluate_run


def train_tiny(dataset, out):
    from training.train import main

    threads = torch.get_num_threads()
    main(TrainConfig(dataset=str(dataset), output_dir=str(out), epochs=2, batch_size=8,
                     workers=0, image_size=32, device="cpu", threads=1, backbone="tiny",
                     pretrained=False))
    torch.set_num_threads(threads)
    return out / "model.pt"


def test_shuffled_labels_are_reported_as_not_beating_the_baselines(tmp_path):
    dataset = build_tiny_dataset(tmp_path / "datasets", shuffle_train=True)
    model = train_tiny(dataset, tmp_path / "model")
    metrics = evaluate_run(model, dataset, tmp_path / "report", batch_size=32, workers=0,
                           device="cpu", gradcam_images=0)
    section = metrics["baselines"]
    assert metrics["headline"]["beats_all_baselines"] is False
    assert section["verdicts"]["majority"]["top1_level_1"] != "beats"
    assert section["verdicts"]["chance"]["top1_level_1"] != "beats"
    assert "nearest_neighbour" in section["verdicts"]
    page = (tmp_path / "report" / "report.html").read_text()
    assert "does NOT beat majority" in page and "does NOT beat majority" in \
        metrics["headline"]["verdict"]


def test_true_labels_beat_the_majority_class(tiny_model, tiny_dataset, tmp_path):
    metrics = evaluate_run(tiny_model, tiny_dataset / "datasets" / "dataset.json",
                           tmp_path / "report", batch_size=32, workers=0, device="cpu",
                           gradcam_images=4, nn_baseline=False)
    section = metrics["baselines"]
    assert set(section["baselines"]) == {"chance", "majority", "median_point"}
    assert section["verdicts"]["majority"]["top1_level_1"] == "beats"
    assert section["baselines"]["chance"]["top1_level_1"] == pytest.approx(0.25)
    assert section["n_reference"] == 128  # train folds 0 and 1 of the tiny dataset
    page = (tmp_path / "report" / "report.html").read_text()
    assert "Against the baselines" in page and 'class="beats"' in page
    for name in ("embeddings.png", "map.png"):
        assert (tmp_path / "report" / name).read_bytes()[:4] == b"\x89PNG"
    # per-class rows: only classes with test support, named by place
    level2 = page.split("<h3>level 2</h3>")[1]
    supports = [int(s) for s in re.findall(r"<td>(\d+)</td></tr>", level2)]
    assert supports and min(supports) > 0
    assert "sea" in level2 or re.search(r"<td>[A-Z][a-z]+", level2)
    # rounded numbers: no 16-digit floats in the page
    assert not re.search(r"\d\.\d{6,}", page)


def test_zero_support_classes_are_left_out(tiny_model, tiny_dataset, tmp_path):
    from training.eval_report import per_class_rows

    metrics = {"per_class": {"1": {"cell_id": ["0", "1"], "precision": [0.5, 0.0],
                                   "recall": [1.0, 0.0], "f1": [0.6, 0.0], "support": [3, 0]}},
               "class_countries": [["Croatia", "sea"]]}
    [(level, rows)] = per_class_rows(metrics)
    assert level == "1" and [r["cell"] for r in rows] == ["0"] and rows[0]["place"] == "Croatia"


def test_compare_reads_paired_differences():
    rng = np.random.default_rng(0)
    base = {"top1_level_1": rng.integers(0, 2, 400).astype(float),
            "median_km": rng.uniform(100, 5000, 400)}
    better = {"top1_level_1": np.ones(400), "median_km": base["median_km"] / 2}
    mask = {}
    assert compare(better, base, mask) == {"top1_level_1": "beats", "median_km": "beats"}
    assert compare(base, better, mask) == {"top1_level_1": "loses", "median_km": "loses"}
    assert compare(base, base, mask) == {"top1_level_1": "level", "median_km": "level"}


def test_median_point_unwraps_the_antimeridian():
    pacific = np.array([[-17.0, 178.0], [-18.0, 179.5], [-16.0, -179.0], [-15.0, -178.0],
                        [-17.5, 177.0]])
    lat, lon = median_point(pacific)
    assert lat == pytest.approx(-17.0) and lon == pytest.approx(179.5)


def test_chance_is_the_expectation_over_classes():
    from training.baselines import TestSet

    test = TestSet(np.array([[0.0, 0.0]]), np.zeros((1, 1), dtype=int),
                   {"country_acc": np.array(["X"])})
    centroids = np.array([[0.0, 0.1], [0.0, 90.0]])  # 11 km and 10,000 km away
    values = chance(test, [1], [2], centroids, {"country_acc": np.array(["X", "Y"])})
    assert values["acc_25km"][0] == pytest.approx(0.5)
    assert values["country_acc"][0] == pytest.approx(0.5)
    assert values["top1_level_1"][0] == pytest.approx(0.5)


def test_asset_metadata_shows_rounded_verdicts():
    from pipeline.assets.evaluate import baseline_metadata

    section = {"metrics": ["top1_level_1", "median_km"],
               "model": {"top1_level_1": 0.51234567, "median_km": 6087.4},
               "baselines": {"majority": {"top1_level_1": 0.588, "median_km": 5035.2}},
               "verdicts": {"majority": {"top1_level_1": "loses", "median_km": "loses"}},
               "sentence": "The model does NOT beat majority on any metric."}
    meta = baseline_metadata(section)
    assert meta["beats_all_baselines"] is False
    assert "| top1_level_1 | 0.512 | 0.588 (loses) |" in meta["baselines"].value
    assert "| median_km | 6,087 | 5,035 (loses) |" in meta["baselines"].value
    assert "NOT beat majority" in meta["verdict"].value


def test_region_accuracy_when_admin1_is_configured(tiny_model, tiny_dataset, tmp_path):
    import geopandas as gpd
    import shapely
    from tiny_dataset import LEVEL2

    from geo_assets.cells import cells_bounds
    from geo_assets.naturalearth import embedded_countries

    folder = tmp_path / "ne"
    folder.mkdir()
    embedded_countries().to_file(folder / "ne_110m_admin_0_countries.geojson")
    # admin-1 "regions" = the tiny dataset's level-2 cells, so region = finest class
    bounds = cells_bounds(LEVEL2)
    regions = gpd.GeoDataFrame({"iso_3166_2": [f"R-{c}" for c in LEVEL2],
                                "name": [f"region {c}" for c in LEVEL2]},
                               geometry=[shapely.box(b[0], b[1], b[2], b[3]) for b in bounds],
                               crs=4326)
    regions.to_file(folder / "ne_10m_admin_1_states_provinces.geojson")
    metrics = evaluate_run(tiny_model, tiny_dataset / "datasets" / "dataset.json",
                           tmp_path / "report", batch_size=32, workers=0, device="cpu",
                           gradcam_images=0, nn_baseline=False, location="top1",
                           natural_earth_dir=str(folder))
    section = metrics["baselines"]
    assert section["metrics"][-2:] == ["country_acc", "region_acc"]
    # the top cell's centroid lies in the top cell's region: region accuracy = finest top-1
    assert section["model"]["region_acc"] == pytest.approx(
        metrics["per_level"]["2"]["hierarchical"]["top1"])
    assert section["baselines"]["chance"]["region_acc"] == pytest.approx(1 / 8)
    assert "region_acc" in (tmp_path / "report" / "report.html").read_text()
