"""``geoscout predict`` on real JPEGs, its errors, and the test-split evaluation report."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from pipeline.cli import main as geoscout
from training.evaluate import evaluate_run


def a_jpeg(path, colour=(220, 40, 40)):
    pixels = np.full((60, 80, 3), colour, dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG")
    return path


def test_predict_real_street_view_jpeg(tiny_model, shared_data, capsys, tmp_path):
    folder = shared_data("real", "croatia_streetview", "images")
    photo = min(folder.glob("*.jpg"))
    page = tmp_path / "map.html"
    assert geoscout(["predict", str(photo), "--model", str(tiny_model), "--html", str(page),
                     "--json"]) == 0
    [result] = json.loads(capsys.readouterr().out)
    assert result["photo"] == str(photo)
    assert 1 <= len(result["cells"]) <= 5
    assert result["probabilities"] == sorted(result["probabilities"], reverse=True)
    assert -90 <= result["lat_deg"] <= 90 and -180 <= result["lon_deg"] <= 180
    assert "leaflet" in page.read_text().lower()


def test_predict_text_output_learned_colour(tiny_model, tmp_path, capsys):
    # red is level-2 cell "00" in the tiny dataset (south-west quadrant)
    photo = a_jpeg(tmp_path / "red.jpg")
    assert geoscout(["predict", str(photo), "--model", str(tiny_model), "-k", "3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{photo}: ") and "1. cell" in out


def test_predict_reports_unreadable_files_and_goes_on(tiny_model, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg at all")
    good = a_jpeg(tmp_path / "ok.jpg")
    code = geoscout(["predict", str(bad), str(tmp_path / "missing.jpg"), str(good),
                     "--model", str(tiny_model)])
    captured = capsys.readouterr()
    assert code == 2
    assert f"{bad}: not a readable image" in captured.err
    assert "missing.jpg: no such file" in captured.err
    assert str(good) in captured.out


def test_predict_without_a_model_says_what_to_do(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GEOSCOUT_DATA_ROOT", str(tmp_path / "empty"))
    assert geoscout(["predict", str(a_jpeg(tmp_path / "x.jpg"))]) == 2
    assert "no trained model" in capsys.readouterr().err
    assert geoscout(["predict", str(tmp_path / "x.jpg"), "--model",
                     str(tmp_path / "nope.pt")]) == 2
    assert "model file" in capsys.readouterr().err
    junk = tmp_path / "junk.pt"
    junk.write_bytes(io.BytesIO(b"junk").getvalue())
    assert geoscout(["predict", str(tmp_path / "x.jpg"), "--model", str(junk)]) == 2


def test_evaluation_report(tiny_model, tiny_dataset, tmp_path):
    metrics = evaluate_run(tiny_model, tiny_dataset / "datasets" / "dataset.json",
                           tmp_path / "report", batch_size=32, workers=0, device="cpu",
                           gradcam_images=4)
    assert metrics["n_test"] == 64
    for name in ("report.html", "metrics.json", "map.html", "error_histogram.png",
                 "reliability.png", "confusion.png", "gradcam.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0
        if name.endswith(".png"):
            assert (tmp_path / "report" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    level1, level2 = metrics["per_level"]["1"], metrics["per_level"]["2"]
    # the coarsest level has no parents: hierarchical = flat (up to renormalisation rounding)
    assert level1["hierarchical"] == pytest.approx(level1["flat"], rel=1e-6)
    assert set(level2) == {"flat_raw", "flat", "hierarchical"}
    assert level1["flat"]["top1"] == level1["flat_raw"]["top1"]  # temperature keeps argmax
    assert len(metrics["confusion"]["1"]) == 4
    assert sum(metrics["per_class"]["1"]["support"]) == 64
    ladder = metrics["distance"]["hierarchical"]
    assert ladder["acc_1km"] <= ladder["acc_25km"] <= ladder["acc_200km"] \
        <= ladder["acc_750km"] <= ladder["acc_2500km"]
    html = (tmp_path / "report" / "report.html").read_text()
    assert "Per class" in html and "gradcam.png" in html
    on_disk = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert on_disk["headline"]["n_test"] == 64


@pytest.mark.parametrize("flag", ["--flat", "--location=top1"])
def test_predict_flags(tiny_model, tmp_path, flag, capsys):
    assert geoscout(["predict", str(a_jpeg(tmp_path / "p.jpg")), "--model", str(tiny_model),
                     flag]) == 0
    assert "estimated lat, lon" in capsys.readouterr().out
