"""Loader throughput: training/data.py against torchvision ImageFolder + PIL, in one run.

Both read the same images at the same size: the 800 real Croatia Street View photos, resized
once to a shorter side of 256 px (by geoscout's shard writer) and stored both as WebDataset
shards and, byte for byte, as ImageFolder files. Both produce normalised float batches of
224 x 224 random resized crops with the same batch size and worker count; ImageFolder uses the
standard torchvision recipe (PIL decode, RandomResizedCrop, ToTensor, Normalize).

    .venv/bin/python bench/loader.py [--images 2400] [--workers 2] [--target 2.0]

Last line: ``RESULT loader speedup=<median over paired rounds of ours / ImageFolder images/s>
target=2.0``; CPU time per image is printed too (independent of other load).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch
import webdataset as wds
from torchvision import datasets, transforms

from bench.common import OUT, cpu_seconds
from bench.shards import IMAGES, image_paths, run_ours
from training.data import make_loader

WORK = OUT / "bench_loader"


def prepare() -> tuple[Path, Path]:
    """Shards of the 800 images at 256 px, the same JPEGs as an ImageFolder tree."""
    shards = WORK / "shards"
    folder = WORK / "imagefolder"
    if not (shards / "index.json").exists():
        run_ours(image_paths(1), shards, workers=2)
        shutil.rmtree(folder, ignore_errors=True)
    if not folder.exists():
        for i, name in enumerate(sorted(p.name for p in shards.glob("*.tar"))):
            for sample in wds.DataPipeline(wds.SimpleShardList([str(shards / name)]),
                                           wds.tarfile_to_samples()):
                cls = folder / f"class{json.loads(sample['json'])['labels']['1']}"
                cls.mkdir(parents=True, exist_ok=True)
                (cls / f"{sample['__key__']}.jpg").write_bytes(sample["jpg"])
    descriptor = WORK / "dataset.json"
    descriptor.write_text(json.dumps({"levels": [1], "shard_index": "shards/index.json",
                                      "num_classes": {"1": 1}}))
    return descriptor, folder


def imagefolder_loader(folder: Path, size: int, batch: int, workers: int):
    tf = transforms.Compose([transforms.RandomResizedCrop(size, scale=(0.35, 1.0)),
                             transforms.ToTensor(),
                             transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    return torch.utils.data.DataLoader(datasets.ImageFolder(str(folder), tf), batch_size=batch,
                                       shuffle=True, num_workers=workers, drop_last=True)


def rate(make, n_images: int) -> tuple[float, float]:
    """(images per second, CPU ms per image) over ``n_images`` (restarting epochs), after one
    warm-up batch; CPU time counts this process and its finished DataLoader workers."""
    seen, start = 0, None
    cpu = cpu_seconds()
    while seen < n_images:
        loader = make()
        for batch in loader:
            images = batch[0] if isinstance(batch, (list, tuple)) else batch["images"]
            if start is None:
                start = time.perf_counter()
                continue
            seen += images.shape[0]
            if seen >= n_images:
                break
        del loader  # workers exit and are reaped: their CPU time is counted
    wall = time.perf_counter() - start
    gc.collect()
    return seen / wall, 1000 * (cpu_seconds() - cpu) / seen


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2400, help="images timed per loader")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (2)")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size (64)")
    parser.add_argument("--size", type=int, default=224, help="crop size (224)")
    parser.add_argument("--rounds", type=int, default=3, help="paired rounds (3; median)")
    parser.add_argument("--target", type=float, default=2.0, help="speed-up to reach (2.0)")
    args = parser.parse_args(argv)
    if not (IMAGES / "labels.csv").exists():
        print(f"skipped: {IMAGES} is absent")
        print(f"RESULT loader speedup=skipped target={args.target}")
        return 0
    torch.set_num_threads(1)
    descriptor, folder = prepare()
    ours_make = lambda: make_loader(descriptor, "train", None, image_size=args.size,
                                    batch_size=args.batch_size, num_workers=args.workers,
                                    train=True, epoch_samples=args.images)
    theirs_make = lambda: imagefolder_loader(folder, args.size, args.batch_size,
                                             args.workers)
    ours, theirs = [], []
    for _ in range(args.rounds):  # paired and interleaved: machine load changes hit both
        theirs.append(rate(theirs_make, args.images))
        ours.append(rate(ours_make, args.images))
    ratios = [o[0] / t[0] for o, t in zip(ours, theirs)]
    print(f"{args.images} images x {args.rounds} rounds, {args.size} px crops, batch "
          f"{args.batch_size}, {args.workers} workers, load average "
          f"{os.getloadavg()[0]:.1f} (2 cores)")
    for name, runs in (("ImageFolder + PIL", theirs), ("geoscout loader", ours)):
        print(f"{name:18s} {statistics.mean(r[0] for r in runs):8.1f} images/s "
              f"{statistics.mean(r[1] for r in runs):6.2f} CPU ms/image  "
              f"{[round(r[0]) for r in runs]}")
    cpu_ratio = statistics.mean(r[1] for r in theirs) / statistics.mean(r[1] for r in ours)
    print(f"per-round speed-ups {[round(r, 2) for r in ratios]}; CPU time per image "
          f"ImageFolder / geoscout = {cpu_ratio:.2f}")
    print(f"RESULT loader speedup={statistics.median(ratios):.2f} target={args.target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
