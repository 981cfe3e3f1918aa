"""``geoscout predict PHOTO...``: where was each photo taken?

Prints, per photo, the most likely country with its confidence (the summed probability of
the finest-level cells whose centroid lies in it; countries from Natural Earth admin-0 via
``geo_assets.admin``), the most likely cells at the finest level (adaptive top-k: the fewest
cells that hold ``--mass`` of the probability, at most ``--top-k``) with probabilities and
their countries, and an estimated latitude/longitude (the location estimator recorded in
model.pt when there is one, else the top cell's centroid); ``--json`` prints the same as JSON,
``--html`` also writes a map. A model trained on the synthetic demo world is flagged. Unreadable
photos are reported by name and skipped (exit status 2); a missing model is a clear error.
"""

from __future__ import annotations

import argparse
import html
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torchvision.transforms.v2 import functional as tvf

from geo_assets import layout
from geo_assets.admin import AdminIndex, country_index, country_probabilities
from geo_assets.errors import InputError
from geo_assets.images import ImageError, open_image
from geo_assets.settings import ImageSettings
from geo_assets.storage import DataRoot, default_data_root, local_copy
from training.bundle import ModelBundle, load_bundle
from training.data import EVAL_CROP_RATIO
from training.distributed import pick_device
from training.inference import (
    Prediction,
    hierarchical_log_probs,
    level_log_probs,
    predict_cells,
    usable_method,
)
from training.provenance import LOCATIONS, recorded_location, trained_on_demo_world

DEMO_WARNING = ("warning: this model was trained on the synthetic demo world; its answers say "
                "nothing about real photos")


def default_model_path(data_root: str | None = None) -> str:
    """The newest model file under the data root's models folder (``--data-root``, else
    GEOSCOUT_DATA_ROOT or the default; a folder or an fsspec URL such as ``s3://...``)."""
    root = DataRoot(data_root or default_data_root())
    found = root.glob(f"{layout.MODELS_DIR}/*/{layout.MODEL_FILE}")
    if not found:
        raise InputError(f"no trained model under {root.uri(layout.MODELS_DIR)}: materialize "
                         "trained_model (or run `geoscout demo`) first, or pass --model "
                         "PATH/model.pt")
    return root.uri(max(found, key=lambda rel: (root.fs.modified(root.path(rel)), rel)))


# photos given to predict: any common format, no minimum size, the usual safety limits
PHOTO_SETTINGS = ImageSettings(min_width=1, min_height=1, formats=("JPEG", "PNG", "WEBP", "GIF"))
MAX_PHOTO_BYTES = 256 * 1024 * 1024


def load_photo(path: Path, bundle: ModelBundle) -> torch.Tensor:
    """Decode (``geo_assets.images.open_image``: pixel and frame limits, truncated data
    refused), resize the shorter side, centre-crop and normalise as in evaluation."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    with open(path, "rb") as f:
        data = f.read(MAX_PHOTO_BYTES + 1)
    if len(data) > MAX_PHOTO_BYTES:
        raise InputError(f"{path}: larger than {MAX_PHOTO_BYTES} bytes")
    try:
        image = tvf.pil_to_tensor(open_image(data, PHOTO_SETTINGS, what=str(path)))
    except ImageError as exc:
        raise InputError(f"{path}: not a readable image (JPEG, PNG, GIF or WebP): "
                         f"{exc.detail}") from None
    size = bundle.image_size
    image = tvf.resize(image, [round(size / EVAL_CROP_RATIO)], antialias=True)
    image = tvf.center_crop(image, [size, size]).float().div(255.0)
    mean = torch.tensor(bundle.mean)[:, None, None]
    std = torch.tensor(bundle.std)[:, None, None]
    return (image - mean) / std


@dataclass(frozen=True)
class PhotoAnswer:
    """Everything ``predict`` says about one photo."""

    photo: str
    country: str
    country_code: str
    country_confidence: float
    countries: list[dict]
    cells: list[str]
    cell_countries: list[str]
    probabilities: list[float]
    lat_deg: float
    lon_deg: float


def finest_probs(bundle: ModelBundle, logits: list[torch.Tensor], hierarchical: bool):
    log_probs = level_log_probs(logits, bundle.temperatures)
    if hierarchical:
        log_probs = hierarchical_log_probs(log_probs, bundle.tables)
    return log_probs[-1].exp().numpy()


def predict_photos(bundle: ModelBundle, images: torch.Tensor, hierarchical: bool = True,
                   mass: float = 0.9, top_k: int = 5, location: str = "top1",
                   countries: AdminIndex | None = None, photos: list[str] | None = None,
                   ) -> list[PhotoAnswer]:
    device = next(bundle.model.parameters()).device
    with torch.inference_mode():
        logits, offsets, pooled = bundle.model.outputs(images.to(device))
    logits = [x.float().cpu() for x in logits]
    offsets = None if offsets is None else offsets.float().cpu()
    method = usable_method(location, offsets, bundle.retrieval)
    preds = predict_cells(logits, bundle.tables, bundle.temperatures, hierarchical, mass,
                          top_k, method, offsets=offsets, embeddings=pooled.float().cpu(),
                          index=bundle.retrieval)
    countries = countries or country_index(None)
    finest = bundle.tables.levels[-1]
    cent = finest.centroid_tensor().numpy()
    codes = countries.lookup(cent[:, 0], cent[:, 1])
    by_cell = dict(zip(finest.cell_ids, countries.name_of(codes.tolist())))
    ranked = country_probabilities(codes, finest_probs(bundle, logits, hierarchical))
    photos = photos or [""] * len(preds)
    return [answer(photo, pred, ranked_n, countries, by_cell)
            for photo, pred, ranked_n in zip(photos, preds, ranked)]


def answer(photo: str, pred: Prediction, ranked: list[tuple[str, float]],
           countries: AdminIndex, by_cell: dict[str, str]) -> PhotoAnswer:
    top = [{"country": countries.name_of([c])[0] or "no country (sea)", "code": c,
            "probability": p} for c, p in ranked[:5]]
    best = top[0] if top else {"country": "", "code": "", "probability": 0.0}
    return PhotoAnswer(photo, best["country"], best["code"], best["probability"], top,
                       list(pred.cells), [by_cell.get(c, "") or "sea" for c in pred.cells],
                       list(pred.probabilities), pred.lat_deg, pred.lon_deg)


def format_prediction(path: Path, pred: PhotoAnswer) -> str:
    country = pred.country or "unknown country"
    lines = [(f"{path}: {country} (p={pred.country_confidence:.2f}), near {pred.lat_deg:.4f}, "
             f"{pred.lon_deg:.4f} (estimated lat, lon)")]
    for rank, (cell, place, p) in enumerate(zip(pred.cells, pred.cell_countries,
                                                pred.probabilities), start=1):
        lines.append(f"  {rank}. cell {cell:<10s} {place:<20s} p={p:.3f}")
    return "\n".join(lines)


def write_map(path: Path, results: list[tuple[Path, PhotoAnswer]]) -> None:
    """The predictions on a map that draws offline (Leaflet inlined, Natural Earth land)."""
    from geo_assets import mapviz
    from geo_assets.storage import atomic_path

    tips = [html.escape(f"{photo.name}: {pred.country} {pred.lat_deg:.3f}, {pred.lon_deg:.3f}")
            for photo, pred in results]
    fmap = mapviz.points_map([p.lat_deg for _, p in results], [p.lon_deg for _, p in results],
                             ["#c62828"] * len(results), tooltips=tips,
                             title="geoscout predict", legend={"prediction": "#c62828"})
    with atomic_path(path) as tmp:
        tmp.write_bytes(mapviz.map_html(fmap))


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("geoscout predict", add_help=add_help,
                                description="Predict where photos were taken.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("photos", nargs="+", type=Path, metavar="PHOTO", help="image files")
    p.add_argument("--model", default=None,
                   help="model.pt, a path or an fsspec URL (default: newest "
                   "models/*/model.pt under the data root)")
    p.add_argument("--data-root", default=None,
                   help="data root (folder or s3://... URL) to find the newest model in (default: "
                   "$GEOSCOUT_DATA_ROOT, else .geoscout/data)")
    p.add_argument("--natural-earth-dir", default=None,
                   help="folder with Natural Earth admin-0 countries (1:50m) for country "
                   "names; default: the embedded 1:110m countries")
    p.add_argument("-k", "--top-k", type=int, default=5, help="most cells listed per photo")
    p.add_argument("--mass", type=float, default=0.9,
                   help="list the fewest cells holding this much probability")
    p.add_argument("--flat", action="store_true",
                   help="finest level alone instead of the hierarchical combination")
    p.add_argument("--location", default=None, choices=LOCATIONS,
                   help="estimate: the top cell's centroid or the probability-weighted top "
                   "cells (default: the estimator recorded in model.pt, else top1)")
    p.add_argument("--html", type=Path, default=None, help="also write a map to this file")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    return p


def cli(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    model_path = args.model or default_model_path(args.data_root)
    with local_copy(model_path) as local_model:  # one download when it is on object storage
        bundle = load_bundle(local_model, pick_device(args.device))
    demo = trained_on_demo_world(model_path, bundle.info)
    if demo:
        print(f"geoscout predict: {DEMO_WARNING}", file=sys.stderr)
    images, good, failed = [], [], 0
    for path in args.photos:
        try:
            images.append(load_photo(path, bundle))
            good.append(path)
        except InputError as exc:
            print(f"geoscout predict: error: {exc}", file=sys.stderr)
            failed += 1
    if not good:
        return 2
    preds = predict_photos(bundle, torch.stack(images), not args.flat, args.mass, args.top_k,
                           args.location or recorded_location(bundle.info, bundle.location),
                           country_index(args.natural_earth_dir), [str(p) for p in good])
    results = list(zip(good, preds))
    if args.json:
        print(json.dumps([{**asdict(r), "model": str(model_path), "demo_world": demo}
                          for r in preds], indent=2))
    else:
        print("\n".join(format_prediction(p, r) for p, r in results))
    if args.html:
        write_map(args.html, results)
        print(f"map: {args.html}", file=sys.stderr)
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(cli())
