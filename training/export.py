"""Export a trained model so that it loads and runs without geoscout.

    python -m training.export --model DATA/models/run/model.pt [--metrics DATA/reports/run/metrics.json]
        [--output-dir DATA/models/run/export]

Writes into the output folder (default ``export/`` beside model.pt):
- ``model.torchscript.pt``: TorchScript (``torch.jit.load``), images (N, 3, S, S) float32
  normalised with ``classes.json``'s mean/std -> one logits tensor per level;
- ``model.onnx``: the same graph for onnxruntime (``torch.onnx.export`` with the dynamo exporter
  and onnxscript; dynamic batch size), outputs ``logits_level_<L>``;
- ``classes.json``: per level, the class cells, centroids, parents and temperature, plus the
  input size and normalisation: everything needed to turn logits into places;
- ``MODEL_CARD.md``: a README-style model card (data, splits, metrics with baselines, intended
  use, limits, licence of the imagery), from model_card.json and the evaluation's metrics.json;
- ``export.json``: formats written and the largest logit difference of each export against the
  PyTorch model on the same input (checked on export: ``--atol``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from geo_assets import layout
from geo_assets.errors import InputError
from geo_assets.storage import atomic_path, write_json_atomic
from training.bundle import ModelBundle, load_bundle
from training.model_card_md import model_card_markdown

log = logging.getLogger("geoscout.training")
TORCHSCRIPT_FILE = "model.torchscript.pt"
ONNX_FILE = "model.onnx"
CLASSES_FILE = "classes.json"
EXPORT_INFO_FILE = "export.json"
FORMATS = ("torchscript", "onnx")


class LogitsModule(nn.Module):
    """The model with a tuple output (one logits tensor per level), as exporters want it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model(images))


def classes_json(bundle: ModelBundle) -> dict:
    return {"format": "geoscout-classes/1", "image_size": bundle.image_size,
            "mean": list(bundle.mean), "std": list(bundle.std),
            "input": "RGB float32 (N, 3, S, S), divided by 255 then (x - mean) / std; "
                     "shorter side resized to S / 0.875, centre crop S",
            "levels": [{"level": t.level, "temperature": temp, "cell_ids": list(t.cell_ids),
                        "centroids_deg": [list(c) for c in t.centroids_deg],
                        "parent_class_index": list(t.parents),
                        "output": f"logits_level_{t.level}"}
                       for t, temp in zip(bundle.tables.levels, bundle.temperatures)]}


def export_torchscript(module: nn.Module, example: torch.Tensor, path: Path) -> None:
    with torch.no_grad():
        traced = torch.jit.trace(module, example, check_trace=False)
    with atomic_path(path) as tmp:
        torch.jit.save(traced, str(tmp))


def export_onnx(module: nn.Module, example: torch.Tensor, path: Path, names: list[str]) -> None:
    batch = torch.export.Dim("batch", min=1, max=4096)
    with atomic_path(path) as tmp:
        program = torch.onnx.export(module, (example,), dynamo=True, input_names=["images"],
                                    output_names=names, dynamic_shapes=({0: batch},),
                                    external_data=False, verbose=False)
        program.save(str(tmp))


def max_difference(reference: list[torch.Tensor], other) -> float:
    return max(float(np.abs(np.asarray(r) - np.asarray(o)).max())
               for r, o in zip(reference, other))


def check_exports(out: Path, example: torch.Tensor, reference: list[torch.Tensor],
                  formats: tuple[str, ...]) -> dict[str, float]:
    """Largest absolute logit difference of each written export against the PyTorch model."""
    diffs = {}
    if "torchscript" in formats:
        loaded = torch.jit.load(str(out / TORCHSCRIPT_FILE))
        with torch.no_grad():
            diffs["torchscript"] = max_difference(reference, [t.numpy() for t in loaded(example)])
    if "onnx" in formats:
        import onnxruntime as ort

        session = ort.InferenceSession(str(out / ONNX_FILE), providers=["CPUExecutionProvider"])
        diffs["onnx"] = max_difference(reference, session.run(None, {"images": example.numpy()}))
    return diffs


def export_model(model_path: str | Path, output_dir: str | Path | None = None,
                 metrics_path: str | Path | None = None, formats: tuple[str, ...] = FORMATS,
                 atol: float = 1e-3, batch: int = 2, seed: int = 0) -> dict:
    """Write the exports, classes.json and MODEL_CARD.md; returns export.json's content."""
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise InputError(f"unknown export format(s) {sorted(unknown)}: use {', '.join(FORMATS)}")
    model_path = Path(model_path)
    bundle = load_bundle(model_path, "cpu")
    out = Path(output_dir) if output_dir else model_path.parent / layout.EXPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    module = LogitsModule(bundle.model).eval()
    example = torch.randn(batch, 3, bundle.image_size, bundle.image_size,
                          generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        reference = [t.numpy() for t in module(example)]
    names = [f"logits_level_{lv}" for lv in bundle.tables.level_ids]
    if "torchscript" in formats:
        export_torchscript(module, example, out / TORCHSCRIPT_FILE)
    if "onnx" in formats:
        export_onnx(module, example, out / ONNX_FILE, names)
    diffs = check_exports(out, example, reference, tuple(formats))
    bad = {k: v for k, v in diffs.items() if not v <= atol}
    if bad:
        raise RuntimeError(f"exported model differs from {model_path}: max |logit difference| "
                           f"{bad} above {atol}")
    write_json_atomic(out / CLASSES_FILE, classes_json(bundle), indent=1)
    card = read_json(model_path.parent / layout.MODEL_CARD_FILE)
    metrics = read_json(Path(metrics_path)) if metrics_path else None
    text = model_card_markdown(bundle, card, metrics, exports=[f for f in FORMATS
                                                               if f in formats])
    with atomic_path(out / layout.MODEL_CARD_MD_FILE) as tmp:
        tmp.write_text(text)
    info = {"model": str(model_path), "formats": list(formats), "max_abs_logit_diff": diffs,
            "atol": atol, "outputs": names, "files": sorted(p.name for p in out.iterdir())}
    write_json_atomic(out / EXPORT_INFO_FILE, info, indent=1)
    return info


def read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from exc


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("geoscout export", add_help=add_help,
                                description="Export a model to TorchScript and ONNX with a "
                                "README-style model card.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, type=Path, help="model.pt written by training")
    p.add_argument("--output-dir", type=Path, default=None,
                   help="folder for the exports (default: export/ beside model.pt)")
    p.add_argument("--metrics", type=Path, default=None,
                   help="metrics.json of the evaluation, for the card's metrics and baselines")
    p.add_argument("--format", dest="formats", action="append", choices=FORMATS,
                   help="export format (repeatable; default: all)")
    p.add_argument("--atol", type=float, default=1e-3,
                   help="largest logit difference accepted against the PyTorch model")
    return p


def cli(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        info = export_model(args.model, args.output_dir, args.metrics,
                            tuple(args.formats or FORMATS), args.atol)
    except InputError as exc:
        print(f"geoscout export: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(info, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
