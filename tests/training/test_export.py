"""Export round trip: TorchScript and ONNX give the trained model's logits on real photos,
load without geoscout, and come with classes.json and a README-style MODEL_CARD.md."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import torch

from training.bundle import load_bundle
from training.evaluate import evaluate_run
from training.export import export_model
from training.predict import load_photo


def test_exports_give_the_trained_models_logits(tiny_model, tiny_dataset, shared_data,
                                                tmp_path):
    metrics = evaluate_run(tiny_model, tiny_dataset / "datasets" / "dataset.json",
                           tmp_path / "report", batch_size=32, workers=0, device="cpu",
                           gradcam_images=0, nn_baseline=False)
    out = tmp_path / "export"
    info = export_model(tiny_model, out, tmp_path / "report" / "metrics.json")
    assert set(info["max_abs_logit_diff"]) == {"torchscript", "onnx"}
    # real photos, a batch size other than the export example's
    bundle = load_bundle(tiny_model)
    folder = shared_data("real", "croatia_streetview", "images")
    images = torch.stack([load_photo(p, bundle) for p in sorted(folder.glob("*.jpg"))[:3]])
    with torch.no_grad():
        expected = [t.numpy() for t in bundle.model(images)]
    scripted = torch.jit.load(str(out / "model.torchscript.pt"))
    with torch.no_grad():
        got = [t.numpy() for t in scripted(images)]
    import onnxruntime as ort

    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {"images": images.numpy()})
    assert [o.name for o in session.get_outputs()] == ["logits_level_1", "logits_level_2"]
    for e, s, o in zip(expected, got, onnx_out):
        assert e.shape == s.shape == o.shape == (3, e.shape[1])
        np.testing.assert_allclose(s, e, atol=1e-4)
        np.testing.assert_allclose(o, e, atol=1e-4)
    classes = json.loads((out / "classes.json").read_text())
    assert [len(lv["cell_ids"]) for lv in classes["levels"]] == [4, 8]
    card = (out / "MODEL_CARD.md").read_text()
    assert "## Licence of the imagery" in card and "## Intended use" in card
    assert metrics["headline"]["verdict"] in card and "| majority |" in card
    assert "nearest_neighbour" not in card and f"{metrics['n_test']} test images" in card


def test_exported_model_runs_without_geoscout(tiny_model, tmp_path):
    out = tmp_path / "export"
    export_model(tiny_model, out, formats=("onnx",))
    assert not (out / "model.torchscript.pt").exists()
    # a fresh interpreter that cannot import geoscout's packages
    code = ("import sys, json, numpy as np, onnxruntime as ort\n"
            "sys.modules['training'] = sys.modules['geo_assets'] = None\n"
            f"c = json.load(open({str(out / 'classes.json')!r}))\n"
            f"s = ort.InferenceSession({str(out / 'model.onnx')!r})\n"
            "x = np.zeros((1, 3, c['image_size'], c['image_size']), np.float32)\n"
            "out = s.run(None, {'images': x})\n"
            "print([o.shape[1] for o in out])\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=tmp_path, check=True)
    assert result.stdout.strip() == "[4, 8]"
