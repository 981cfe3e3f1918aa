"""``geoscout predict``: country with its confidence, demo-world warning, --data-root, --json."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from geo_assets import layout
from pipeline.cli import main as geoscout
from training.provenance import recorded_location


def a_jpeg(path, colour=(220, 40, 40)):
    Image.fromarray(np.full((60, 80, 3), colour, dtype=np.uint8)).save(path, format="JPEG")
    return path


def data_root_with(model, tmp_path, demo: bool):
    root = tmp_path / ("demo_root" if demo else "root")
    run = root / layout.model_dir("run1")
    run.mkdir(parents=True)
    shutil.copy(model, run / layout.MODEL_FILE)
    if demo:
        (root / "demo_world.json").write_text(json.dumps({"seed": 0, "preset": "demo"}))
    return root


def test_country_confidence_is_the_sum_over_its_cells(tiny_model, tmp_path, capsys):
    photo = a_jpeg(tmp_path / "red.jpg")
    assert geoscout(["predict", str(photo), "--model", str(tiny_model), "--json", "-k", "8",
                     "--mass", "1.0"]) == 0
    [result] = json.loads(capsys.readouterr().out)
    assert len(result["cells"]) == 8  # every finest class listed
    in_country = [p for p, c in zip(result["probabilities"], result["cell_countries"])
                  if c == (result["country"] if result["country_code"] else "sea")]
    assert result["country_confidence"] == pytest.approx(sum(in_country), abs=1e-6)
    listed = result["countries"]
    assert listed[0]["probability"] == pytest.approx(result["country_confidence"])
    assert sum(c["probability"] for c in listed) == pytest.approx(1.0, abs=1e-6)
    assert result["demo_world"] is False


def test_demo_world_model_is_flagged_and_found_through_data_root(tiny_model, tmp_path, capsys):
    photo = a_jpeg(tmp_path / "red.jpg")
    root = data_root_with(tiny_model, tmp_path, demo=True)
    assert geoscout(["predict", str(photo), "--data-root", str(root)]) == 0
    captured = capsys.readouterr()
    assert "synthetic demo world" in captured.err
    assert captured.out.startswith(f"{photo}: ") and "(p=" in captured.out
    plain = data_root_with(tiny_model, tmp_path, demo=False)
    assert geoscout(["predict", str(photo), "--data-root", str(plain), "--json"]) == 0
    captured = capsys.readouterr()
    assert "demo world" not in captured.err
    [result] = json.loads(captured.out)
    assert result["model"] == str(plain / layout.model_dir("run1") / layout.MODEL_FILE)


def test_data_root_without_models_says_so(tmp_path, capsys):
    photo = a_jpeg(tmp_path / "x.jpg")
    assert geoscout(["predict", str(photo), "--data-root", str(tmp_path / "nothing")]) == 2
    assert "no trained model" in capsys.readouterr().err


def test_recorded_location_estimator():
    assert recorded_location({}) == "top1"
    assert recorded_location({"location_estimator": "weighted"}) == "weighted"
    assert recorded_location({"location_estimator": {"method": "weighted"}}) == "weighted"
    assert recorded_location({"location_estimator": "something-new"}) == "top1"
    # model.pt's own record (training/validation.py) wins, and unusable methods fall back
    assert recorded_location({}, {"method": "retrieval"}) == "retrieval"
    from training.inference import usable_method

    assert usable_method("retrieval", None, None) == "centroid"
    assert usable_method("regression", None, object()) == "centroid"
    assert usable_method("weighted", None, None) == "weighted_mean"
