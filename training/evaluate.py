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

import torch

from geo_assets.progress import track
from training import data
from training.batches import to_batch
from training.bundle import ModelBundle, load_bundle
from training.distributed import pick_device, setup_logging
from training.inference import estimate_location, hierarchical_log_probs, level_log_probs
from training.metrics import DistanceMetrics, LevelMetrics, per_class_scores

log = logging.getLogger("geoscout.training")
VARIANTS = ("flat_raw", "flat", "hierarchical")  # flat_raw: before temperature scaling


@dataclass
class EvalState:
    """Running sums for one pass over the test split."""

    levels: list[LevelMetrics | dict]
    distances: dict[str, DistanceMetrics]
    rows: list[dict] = field(default_factory=list)
    samples: list[torch.Tensor] = field(default_factory=list)


def new_state(bundle: ModelBundle, confusion_max_classes: int) -> EvalState:
    levels = [{v: LevelMetrics(c, confusion=(v == "hierarchical" and c <= confusion_max_classes))
               for v in VARIANTS} for c in bundle.tables.num_classes]
    return EvalState(levels, {"hierarchical": DistanceMetrics(), "flat": DistanceMetrics(),
                              "hierarchical_top1": DistanceMetrics()})


def variant_log_probs(bundle: ModelBundle, logits: list[torch.Tensor]) -> dict:
    flat = level_log_probs(logits, bundle.temperatures)
    return {"flat_raw": level_log_probs(logits), "flat": flat,
            "hierarchical": hierarchical_log_probs(flat, bundle.tables)}


def update(state: EvalState, bundle: ModelBundle, logits, batch, location: str) -> None:
    by_variant = variant_log_probs(bundle, logits)
    for k, metrics in enumerate(state.levels):
        for variant, m in metrics.items():
            m.update(by_variant[variant][k], batch.labels[:, k])
    finest = bundle.tables.levels[-1].centroid_tensor()
    hier = by_variant["hierarchical"][-1].exp()
    where = estimate_location(hier, finest, location)
    d = state.distances["hierarchical"].update(where, batch.true_deg)
    state.distances["flat"].update(estimate_location(by_variant["flat"][-1].exp(), finest,
                                                     location), batch.true_deg)
    state.distances["hierarchical_top1"].update(estimate_location(hier, finest, "top1"),
                                                batch.true_deg)
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
             confusion_max_classes: int = 64, keep_images: int = 8) -> EvalState:
    state = new_state(bundle, confusion_max_classes)
    with torch.inference_mode():
        for raw in track(loader, desc="evaluate", unit="batch"):
            batch = to_batch(raw, bundle.tables.level_ids)
            logits = [x.float().cpu() for x in bundle.model(batch.images.to(device))]
            update(state, bundle, logits, batch, location)
            if sum(len(s) for s in state.samples) < keep_images:
                state.samples.append(batch.images[:keep_images].cpu())
    return state


def summarise(state: EvalState, bundle: ModelBundle) -> dict:
    tables = bundle.tables
    out = {"n_test": state.levels[0]["flat"].compute()["n"], "levels": tables.level_ids,
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
            "ece_coarsest_after": coarse["flat"]["ece"], **baselines(metrics, levels[0])}


def baselines(metrics: dict, level: str) -> dict:
    """Chance (1 / classes) and majority-class top-1 at a level, to read top-1 against."""
    scores = metrics["per_class"].get(level)
    if not scores:
        return {}
    support = scores["support"]
    return {"chance_top1_coarsest": 1.0 / len(support),
            "majority_top1_coarsest": max(support) / max(sum(support), 1)}


def gradcam_overlays(bundle: ModelBundle, state: EvalState, device: torch.device, count: int):
    """Grad-CAM for the first test images at the coarsest level (predicted class)."""
    from training.gradcam import grad_cam, overlay

    if not state.samples or count <= 0:
        return [], []
    images = torch.cat(state.samples)[:count].to(device)
    heat, classes = grad_cam(bundle.model, images, level_index=0)
    coarse = bundle.tables.levels[0]
    truth = [r["true_coarse"] for r in state.rows[:count]]
    captions = [f"pred {coarse.cell_ids[int(c)]} / true {coarse.cell_ids[t]}"
                for c, t in zip(classes.tolist(), truth)]
    return [overlay(i, h, bundle.mean, bundle.std) for i, h in zip(images, heat)], captions


def evaluate_run(model_path: str | Path, dataset: str | Path, output_dir: str | Path,
                 batch_size: int = 64, workers: int = 2, device: str = "auto",
                 location: str = "weighted", gradcam_images: int = 8) -> dict:
    """Evaluate ``model.pt`` on the test split; writes metrics.json and report.html."""
    started = time.perf_counter()
    dev = pick_device(device)
    bundle = load_bundle(model_path, dev)
    desc = data.load_dataset_descriptor(dataset)
    if desc.levels != tuple(bundle.tables.level_ids):
        raise ValueError(f"model levels {bundle.tables.level_ids} differ from the dataset's "
                         f"{list(desc.levels)}")
    loader = data.make_loader(desc, split="test", image_size=bundle.image_size,
                              batch_size=batch_size, num_workers=workers, train=False)
    state = run_pass(bundle, loader, dev, location, keep_images=gradcam_images)
    metrics = summarise(state, bundle)
    overlays, captions = gradcam_overlays(bundle, state, dev, gradcam_images)
    from training.eval_report import write_report

    metrics["model"] = {"path": str(model_path), **bundle.info}
    metrics["eval_seconds"] = round(time.perf_counter() - started, 1)
    report = write_report(Path(output_dir), metrics, state.rows, overlays, captions)
    metrics["report_path"] = str(report)
    return metrics


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("geoscout evaluation", add_help=add_help,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="model.pt written by training")
    p.add_argument("--dataset", required=True, help="dataset descriptor (dataset.json)")
    p.add_argument("--output-dir", required=True, help="report folder")
    p.add_argument("-b", "--batch-size", type=int, default=64, help="images per batch")
    p.add_argument("-j", "--workers", type=int, default=2, help="loader workers")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--location", default="weighted", choices=("weighted", "top1"),
                   help="location estimate: weighted top cells or the top cell's centroid")
    p.add_argument("--gradcam-images", type=int, default=8, help="test images with Grad-CAM")
    return p


def cli(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    setup_logging(0)
    metrics = evaluate_run(args.model, args.dataset, args.output_dir, args.batch_size,
                           args.workers, args.device, args.location, args.gradcam_images)
    for key, value in metrics["headline"].items():
        log.info("%s: %s", key, value)
    log.info("report: %s", metrics["report_path"])
    return 0


if __name__ == "__main__":
    sys.exit(cli())
