"""Demo-world accuracy against the generator's ceiling, and location error per estimator.

    python -m bench.demo_accuracy --data-root /tmp/demo13 [--run default] [--seed 0]

Reads a finished demo data root (``geoscout demo`` / ``python -m pipeline.cli demo``): the
model's ``model.pt``, the dataset's validation fold (the model's ``val_fold``) and test split.
Prints, per split, the hierarchical top-1 per level, its ratio to
``DemoWorld.accuracy_ceiling(level)`` and the median km of every location estimator
(``training.inference.estimate_locations``), then one RESULT line per target of issue 13:
top-1 at least 0.95 of the ceiling at the coarsest three levels and 0.85 at the finest, and
the median km of the estimator with the lowest validation median (as training picks it) below
the top-1 centroid's. Models saved without a retrieval index get one built here from their
training folds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from geo_assets import layout
from geo_assets.demo.world import generate_world
from training.bundle import load_bundle
from training.data import load_dataset_descriptor, make_loader
from training.inference import hierarchical_log_probs, level_log_probs
from training.validation import available_methods, build_index, collect, location_errors_km


def outputs_of(bundle, desc, split: str, folds):
    loader = make_loader(desc, split, folds, image_size=bundle.image_size, batch_size=128,
                         num_workers=1, train=False, mean=bundle.mean, std=bundle.std)
    return collect(bundle.model, loader, bundle.tables, torch.device("cpu"))


def split_figures(bundle, desc, split: str, folds, ceilings: dict[int, float], index) -> dict:
    out = outputs_of(bundle, desc, split, folds)
    hier = hierarchical_log_probs(level_log_probs(out.logits, bundle.temperatures),
                                  bundle.tables)
    top1 = {t.level: float((lp.argmax(-1) == out.labels[:, k]).double().mean())
            for k, (t, lp) in enumerate(zip(bundle.tables.levels, hier))}
    methods = [m for m in available_methods(out, index)
               if m != "density" or index.radius_km is not None]  # radius: from training
    km = {m: float(location_errors_km(out, bundle.tables, bundle.temperatures, m, index)
                   .median()) for m in methods}
    return {"n": len(out), "top1": top1,
            "ratio": {lv: top1[lv] / ceilings[lv] for lv in top1}, "median_km": km}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", required=True)
    p.add_argument("--run", default="default", help="model run name (models/<run>)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--preset", default="demo")
    args = p.parse_args(argv)
    root = Path(args.data_root)
    run_dir = root / layout.model_dir(args.run)
    bundle = load_bundle(run_dir / layout.MODEL_FILE)
    card = json.loads((run_dir / layout.MODEL_CARD_FILE).read_text())
    desc = load_dataset_descriptor(root / layout.DATASETS_DIR / layout.DESCRIPTOR)
    world = generate_world(args.seed, args.preset)
    ceilings = {t.level: world.accuracy_ceiling(t.level) for t in bundle.tables.levels}
    val_fold = int(card["config"]["val_fold"])
    index = bundle.retrieval
    if index is None:  # a model from before the retrieval index: build it here
        folds = [f for f in desc.folds() if f != val_fold]
        index, _ = build_index(outputs_of(bundle, desc, "train", folds), 10**9)
    figures = {"validation": split_figures(bundle, desc, "train", [val_fold], ceilings, index),
               "test": split_figures(bundle, desc, "test", None, ceilings, index)}
    print(json.dumps({"ceilings": ceilings, "location": bundle.location, **figures}, indent=1))
    levels = [t.level for t in bundle.tables.levels]
    method = bundle.location_method  # the estimator training chose on validation
    if method not in figures["validation"]["median_km"]:  # older models: pick it here
        method = min(figures["validation"]["median_km"],
                     key=lambda m: figures["validation"]["median_km"][m])
    for split, f in figures.items():
        coarse = min(f["ratio"][lv] for lv in levels[:3])
        print(f"RESULT demo_{split}_top1_vs_ceiling_coarse3 ratio={coarse:.3f} target=0.95")
        print(f"RESULT demo_{split}_top1_vs_ceiling_finest ratio={f['ratio'][levels[-1]]:.3f} "
              "target=0.85")
        print(f"RESULT demo_{split}_median_km_{method}_over_centroid "
              f"ratio={f['median_km'][method] / f['median_km']['centroid']:.3f} target=<1")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
