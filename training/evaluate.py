"""Evaluation of a trained model on the held-out test split (never used for training,
early stopping or calibration).

Per level: top-1/top-5 with flat and hierarchical inference, before and after temperature
scaling, ECE before/after; per-class precision/recall/F1 and confusion matrices at the coarse
levels; haversine error ladder (median, mean, accuracy at 1/25/200/750/2500 km, GeoGuessr
score) for hierarchical and flat inference at the finest level.

    python -m training.evaluate --model DATA/models/run/model.pt \
        --dataset DATA/datasets/dataset.json --output-dir DATA/reports/run
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from geo_assets.admin import AdminIndex, country_index, region_index
from geo_assets.errors import DataUnavailableError, InputError
from geo_assets.progress import track
from geo_assets.storage import local_copy
from training import data
from training.baselines import (
    Reference,
    TestSet,
    aggregate,
    compare,
    compute_baselines,
    metric_names,
    per_image,
    verdict_sentence,
)
from training.batches import to_batch
from training.bundle import ModelBundle, load_bundle
from training.distributed import pick_device, setup_logging
from training.inference import (
    estimate_locations,
    hierarchical_log_probs,
    level_log_probs,
    usable_method,
)
from training.metrics import DistanceMetrics, LevelMetrics, per_class_scores
from training.provenance import LOCATIONS, recorded_location, trained_on_demo_world

log = logging.getLogger("geoscout.training")
COUNTRY, REGION = "country_acc", "region_acc"  # admin-0 / admin-1 accuracy metric names
EMBEDDING_VIEW_IMAGES = 1000  # test images in the report's t-SNE view
VARIANTS = ("flat_raw", "flat", "hierarchical")  # flat_raw: before temperature scaling


@dataclass
class EvalState:
    """Running sums for one pass over the test split."""

    levels: list[LevelMetrics | dict]
    distances: dict[str, DistanceMetrics]
    rows: list[dict] = field(default_factory=list)
    samples: list[torch.Tensor] = field(default_factory=list)
    correct: list[torch.Tensor] = field(default_factory=list)  # (n, levels) hierarchical top-1
    labels: list[torch.Tensor] = field(default_factory=list)
    true_deg: list[torch.Tensor] = field(default_factory=list)
    embeddings: list[torch.Tensor] = field(default_factory=list)  # frozen backbone, for NN
    features: list[torch.Tensor] = field(default_factory=list)  # the model's, for the t-SNE


def new_state(bundle: ModelBundle, confusion_max_classes: int) -> EvalState:
    levels = [{v: LevelMetrics(c, confusion=(v == "hierarchical" and c <= confusion_max_classes))
               for v in VARIANTS} for c in bundle.tables.num_classes]
    return EvalState(levels, {"hierarchical": DistanceMetrics(), "flat": DistanceMetrics(),
                              "hierarchical_top1": DistanceMetrics()})


def variant_log_probs(bundle: ModelBundle, logits: list[torch.Tensor]) -> dict:
    flat = level_log_probs(logits, bundle.temperatures)
    return {"flat_raw": level_log_probs(logits), "flat": flat,
            "hierarchical": hierarchical_log_probs(flat, bundle.tables)}


def locate(bundle: ModelBundle, probs: torch.Tensor, method: str, offsets, pooled):
    """Locations by ``method`` (a method of ``inference.estimate_locations``, or the older
    top1/weighted), with the model's offsets and the training images' retrieval index."""
    method = usable_method(method, offsets, bundle.retrieval)
    return estimate_locations(probs, bundle.tables.levels[-1], method, offsets=offsets,
                              embeddings=pooled, index=bundle.retrieval)


def update(state: EvalState, bundle: ModelBundle, logits, batch, location: str,
           offsets=None, pooled=None) -> None:
    by_variant = variant_log_probs(bundle, logits)
    for k, metrics in enumerate(state.levels):
        for variant, m in metrics.items():
            m.update(by_variant[variant][k], batch.labels[:, k])
    hier = by_variant["hierarchical"][-1].exp()
    where = locate(bundle, hier, location, offsets, pooled)
    d = state.distances["hierarchical"].update(where, batch.true_deg)
    state.distances["flat"].update(locate(bundle, by_variant["flat"][-1].exp(), location,
                                          offsets, pooled), batch.true_deg)
    state.distances["hierarchical_top1"].update(locate(bundle, hier, "centroid", None, None),
                                                batch.true_deg)
    state.correct.append(torch.stack([lp.argmax(dim=-1) == batch.labels[:, k]
                                      for k, lp in enumerate(by_variant["hierarchical"])], 1))
    state.labels.append(batch.labels.cpu())
    state.true_deg.append(batch.true_deg.cpu())
    conf, pred = by_variant["hierarchical"][0].exp().max(dim=-1)
    # one conversion per batch instead of tensor indexing per image
    columns = zip(batch.image_ids, batch.true_deg.tolist(), where.tolist(), d.tolist(),
                  batch.labels[:, 0].tolist(), pred.tolist(), conf.tolist())
    for image_id, (t_lat, t_lon), (p_lat, p_lon), err, true_c, pred_c, c in columns:
        state.rows.append({
            "image_id": image_id, "true_lat_deg": t_lat, "true_lon_deg": t_lon,
            "pred_lat_deg": p_lat, "pred_lon_deg": p_lon, "error_km": err,
            "true_coarse": true_c, "pred_coarse": pred_c, "confidence_coarse": c})


def run_pass(bundle: ModelBundle, loader, device: torch.device, location: str = "weighted",
             confusion_max_classes: int = 64, keep_images: int = 8,
             frozen: torch.nn.Module | None = None) -> EvalState:
    state = new_state(bundle, confusion_max_classes)
    with torch.inference_mode():
        for raw in track(loader, desc="evaluate", unit="batch"):
            batch = to_batch(raw, bundle.tables.level_ids)
            images = batch.images.to(device)
            logits, offsets, pooled = bundle.model.outputs(images)
            logits = [x.float().cpu() for x in logits]
            update(state, bundle, logits, batch, location,
                   None if offsets is None else offsets.float().cpu(), pooled.float().cpu())
            if frozen is not None:
                state.embeddings.append(embed(frozen, images))
            shown = sum(len(f) for f in state.features)
            if shown < EMBEDDING_VIEW_IMAGES:
                state.features.append(bundle.model.features(
                    images[:EMBEDDING_VIEW_IMAGES - shown]).float().cpu())
            if sum(len(s) for s in state.samples) < keep_images:
                state.samples.append(batch.images[:keep_images].cpu())
    return state


def embed(frozen: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """L2-normalised pooled features of the frozen backbone (cosine similarity by dot)."""
    return torch.nn.functional.normalize(frozen.features(images).float(), dim=-1).cpu()


def frozen_backbone(model_path: str | Path, bundle: ModelBundle, device: torch.device):
    """The model's backbone with its pretrained (not fine-tuned) weights, for the NN baseline;
    backbones without pretrained weights (``tiny``) keep their seeded random initialisation."""
    from training.models import build_model

    name = torch.load(model_path, map_location="cpu", weights_only=True)["backbone"]
    torch.manual_seed(0)
    try:
        model = build_model(name, bundle.tables.num_classes, pretrained=name != "tiny")
    except (DataUnavailableError, InputError) as exc:  # no weights offline: skipped
        log.warning("nearest-neighbour baseline skipped: %s", exc)
        return None, name
    return model.to(device).eval(), name


def reference_pass(loader, levels: list[int], device: torch.device, frozen,
                   max_images: int) -> Reference:
    """Training-split locations and labels (and frozen embeddings of up to max_images)."""
    coords, labels, embeddings, seen = [], [], [], 0
    with torch.inference_mode():
        for raw in loader:
            batch = to_batch(raw, levels)
            coords.append(batch.true_deg.numpy())
            labels.append(batch.labels.numpy())
            if frozen is not None and seen < max_images:
                embeddings.append(embed(frozen, batch.images[:max_images - seen].to(device)))
                seen += len(embeddings[-1])
    coords_np = np.concatenate(coords)
    emb = torch.cat(embeddings) if embeddings else None
    return Reference(coords_np[:len(emb)] if emb is not None else coords_np,
                     np.concatenate(labels)[:len(emb)] if emb is not None else
                     np.concatenate(labels), emb)


def model_values(state: EvalState, admins: dict[str, AdminIndex], levels: list[int]) -> tuple:
    """The model's per-image values (as the baselines') and the test set."""
    true = torch.cat(state.true_deg).numpy()
    pred = np.array([[r["pred_lat_deg"], r["pred_lon_deg"]] for r in state.rows])
    km = np.array([r["error_km"] for r in state.rows])
    truth = {name: index.lookup(true[:, 0], true[:, 1]) for name, index in admins.items()}
    guess = {name: index.lookup(pred[:, 0], pred[:, 1]) for name, index in admins.items()}
    test = TestSet(true, torch.cat(state.labels).numpy(), truth,
                   torch.cat(state.embeddings) if state.embeddings else None)
    match = {name: (guess[name] == truth[name]) & (truth[name] != "") for name in admins}
    for row, t, p in zip(state.rows, truth[COUNTRY].tolist(), guess[COUNTRY].tolist()):
        row["true_country"], row["pred_country"] = t, p
    return per_image(levels, torch.cat(state.correct).numpy(), km, match), test


def baseline_section(state: EvalState, bundle: ModelBundle, reference: Reference,
                     admins: dict[str, AdminIndex]) -> dict:
    """Model and baseline metrics on the same test images, and the verdicts."""
    tables = bundle.tables
    levels = tables.level_ids
    model, test = model_values(state, admins, levels)
    if reference.embeddings is not None and len(reference.embeddings) == 0:
        reference.embeddings = None
    centroids = [t.centroid_tensor().numpy() for t in tables.levels]
    values, about = compute_baselines(reference, test, levels, tables.num_classes, centroids,
                                      admins)
    masks = test.masks()
    verdicts = {name: compare(model, v, masks) for name, v in values.items()}
    return {"metrics": metric_names(levels, list(admins)), "model": aggregate(model, masks),
            "baselines": {name: aggregate(v, masks) for name, v in values.items()},
            "about": about, "verdicts": verdicts, "sentence": verdict_sentence(verdicts),
            "n_with_country": int(masks[COUNTRY].sum()),
            "countries_source": admins[COUNTRY].source,
            "regions_source": admins[REGION].source if REGION in admins else None,
            "n_reference": len(reference.coords_deg)}


def summarise(state: EvalState, bundle: ModelBundle, baselines_: dict | None = None) -> dict:
    tables = bundle.tables
    out = {"baselines": baselines_, "n_test": state.levels[0]["flat"].compute()["n"], "levels": tables.level_ids,
           "temperatures": bundle.temperatures, "per_level": {}, "per_class": {},
           "confusion": {}, "reliability": {},
           "distance": {k: m.compute() for k, m in state.distances.items()}}
    for table, metrics in zip(tables.levels, state.levels):
        lv = str(table.level)
        out["per_level"][lv] = {v: m.compute() for v, m in metrics.items()}
        out["reliability"][lv] = {"before": metrics["flat_raw"].bins.tolist(),
                                  "after": metrics["flat"].bins.tolist()}
        confusion = metrics["hierarchical"].confusion
        if confusion is not None:
            out["confusion"][lv] = confusion.tolist()
            out["per_class"][lv] = {"cell_id": list(table.cell_ids),
                                    **per_class_scores(confusion)}
    out["headline"] = headline(out)
    return out


def headline(metrics: dict) -> dict:
    levels = [str(lv) for lv in metrics["levels"]]
    coarse, fine = metrics["per_level"][levels[0]], metrics["per_level"][levels[-1]]
    dist = metrics["distance"]["hierarchical"]
    return {"n_test": metrics["n_test"],
            "top1_coarsest": coarse["hierarchical"]["top1"],
            "top1_finest_hierarchical": fine["hierarchical"]["top1"],
            "top1_finest_flat": fine["flat"]["top1"],
            "median_km": dist.get("median_km"), "mean_km": dist.get("mean_km"),
            "geoguessr": dist.get("geoguessr"), "acc_2500km": dist.get("acc_2500km"),
            "acc_750km": dist.get("acc_750km"),
            "ece_coarsest_before": coarse["flat_raw"]["ece"],
            "ece_coarsest_after": coarse["flat"]["ece"], **baselines(metrics, levels[0]),
            **verdict_headline(metrics.get("baselines"))}


def verdict_headline(section: dict | None) -> dict:
    if not section:
        return {}
    beats_all = all(v == "beats" for per in section["verdicts"].values() for v in per.values()
                    if v != "n/a")
    return {"country_acc": section["model"]["country_acc"], "beats_all_baselines": beats_all,
            "verdict": section["sentence"]}


def baselines(metrics: dict, level: str) -> dict:
    """Chance (1 / classes) and majority-class top-1 at a level, to read top-1 against."""
    scores = metrics["per_class"].get(level)
    if not scores:
        return {}
    support = scores["support"]
    return {"chance_top1_coarsest": 1.0 / len(support),
            "majority_top1_coarsest": max(support) / max(sum(support), 1)}


def gradcam_overlays(bundle: ModelBundle, state: EvalState, device: torch.device, count: int,
                     places: list[str]):
    """Grad-CAM for the first test images at the coarsest level (predicted class)."""
    from training.gradcam import grad_cam, overlay

    if not state.samples or count <= 0:
        return [], []
    images = torch.cat(state.samples)[:count].to(device)
    heat, classes = grad_cam(bundle.model, images, level_index=0)
    coarse = bundle.tables.levels[0]
    truth = [r["true_coarse"] for r in state.rows[:count]]
    captions = [f"pred {places[int(c)]} ({coarse.cell_ids[int(c)]}) / true {places[t]} "
                f"({coarse.cell_ids[t]})" for c, t in zip(classes.tolist(), truth)]
    return [overlay(i, h, bundle.mean, bundle.std) for i, h in zip(images, heat)], captions


def evaluate_run(model_path: str | Path, dataset: str | Path, output_dir: str | Path,
                 batch_size: int = 64, workers: int = 2, device: str = "auto",
                 location: str | None = None, gradcam_images: int = 8, *,
                 natural_earth_dir: str | None = None, nn_baseline: bool = True,
                 nn_max_images: int = 20000) -> dict:
    """Evaluate ``model.pt`` on the test split against the baselines; writes metrics.json and
    report.html."""
    started = time.perf_counter()
    dev = pick_device(device)
    with local_copy(model_path) as local_model:  # model.pt on object storage: one download
        bundle = load_bundle(local_model, dev)
        frozen, backbone = (frozen_backbone(local_model, bundle, dev) if nn_baseline
                            else (None, ""))
    desc = data.load_dataset_descriptor(dataset)
    if desc.levels != tuple(bundle.tables.level_ids):
        raise ValueError(f"model levels {bundle.tables.level_ids} differ from the dataset's "
                         f"{list(desc.levels)}")
    location = location or recorded_location(bundle.info, bundle.location)

    def loader(split: str):
        return data.make_loader(desc, split=split, image_size=bundle.image_size,
                                batch_size=batch_size, num_workers=workers, train=False,
                                mean=bundle.mean, std=bundle.std)

    state = run_pass(bundle, loader("test"), dev, location, keep_images=gradcam_images,
                     frozen=frozen)
    reference = reference_pass(loader("train"), bundle.tables.level_ids, dev, frozen,
                               nn_max_images)
    countries = country_index(natural_earth_dir)
    admins = {COUNTRY: countries}
    regions = region_index(natural_earth_dir)
    if regions is not None:
        admins[REGION] = regions
    section = baseline_section(state, bundle, reference, admins)
    section["frozen_backbone"] = backbone
    metrics = summarise(state, bundle, section)
    metrics["class_countries"] = class_countries(bundle, countries)
    overlays, captions = gradcam_overlays(bundle, state, dev, gradcam_images,
                                          metrics["class_countries"][0])
    from training.eval_report import write_report

    metrics["model"] = {"path": str(model_path), **bundle.info}
    metrics["demo_world"] = trained_on_demo_world(model_path, bundle.info)
    metrics["location_estimator"] = location
    metrics["eval_seconds"] = round(time.perf_counter() - started, 1)
    features = torch.cat(state.features) if state.features else None
    report = write_report(Path(output_dir), metrics, state.rows, overlays, captions,
                          embeddings=features)
    metrics["report_path"] = str(report)
    return metrics


def class_countries(bundle: ModelBundle, countries: AdminIndex) -> list[list[str]]:
    """Per level, per class: the country name at the class centroid ("sea" when none)."""
    out = []
    for table in bundle.tables.levels:
        c = table.centroid_tensor().numpy()
        codes = countries.lookup(c[:, 0], c[:, 1])
        out.append([n or "sea" for n in countries.name_of(codes.tolist())])
    return out


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("geoscout evaluation", add_help=add_help,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="model.pt written by training")
    p.add_argument("--dataset", required=True, help="dataset descriptor (dataset.json)")
    p.add_argument("--output-dir", required=True, help="report folder")
    p.add_argument("-b", "--batch-size", type=int, default=64, help="images per batch")
    p.add_argument("-j", "--workers", type=int, default=2, help="loader workers")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--location", default=None, choices=LOCATIONS,
                   help="location estimate: the top cell's centroid or the weighted top cells "
                   "(default: the estimator recorded in model.pt, else top1)")
    p.add_argument("--gradcam-images", type=int, default=8, help="test images with Grad-CAM")
    p.add_argument("--natural-earth-dir", default=None,
                   help="folder with Natural Earth admin-0 countries (1:50m) for country "
                   "accuracy; default: the embedded 1:110m countries")
    p.add_argument("--no-nn-baseline", action="store_true",
                   help="skip the nearest-neighbour baseline (one pass of the frozen backbone "
                   "over the training split)")
    p.add_argument("--nn-max-images", type=int, default=20000,
                   help="training images embedded for the nearest-neighbour baseline")
    return p


def cli(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    setup_logging(0)
    metrics = evaluate_run(args.model, args.dataset, args.output_dir, args.batch_size,
                           args.workers, args.device, args.location, args.gradcam_images,
                           natural_earth_dir=args.natural_earth_dir,
                           nn_baseline=not args.no_nn_baseline,
                           nn_max_images=args.nn_max_images)
    for key, value in metrics["headline"].items():
        log.info("%s: %s", key, value)
    log.info("report: %s", metrics["report_path"])
    return 0


if __name__ == "__main__":
    sys.exit(cli())
