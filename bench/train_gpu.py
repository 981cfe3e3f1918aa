"""Training throughput: the real WebDataset loader against synthetic in-memory tensors, same
model, same step, one run (images/s; the target is real >= 90% of synthetic).

    python bench/train_gpu.py --dataset DATA/datasets/dataset.json --backbone resnet50 \
        --image-size 224 --batch-size 128 --workers 8 --steps 100

Runs on CUDA when available (bf16 autocast, channels-last), else on the CPU (small sizes).
Prints ratios measured in this run only; never a timed assertion.
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch

from training import data
from training.batches import to_batch
from training.config import TrainConfig
from training.hierarchy import load_class_tables
from training.losses import HierarchicalLoss
from training.models import BACKBONES, build_model
from training.train import optimizer_step


def synthetic_batches(batch_size: int, image_size: int, num_classes: list[int]):
    images = torch.randn(batch_size, 3, image_size, image_size)
    labels = torch.stack([torch.randint(0, c, (batch_size,)) for c in num_classes], dim=1)
    while True:
        yield images, labels


def real_batches(desc, cfg: TrainConfig):
    loader = data.make_loader(desc, split="train", folds=desc.folds(), image_size=cfg.image_size,
                              batch_size=cfg.batch_size, num_workers=cfg.workers, train=True,
                              epoch_samples=10**9)
    for raw in loader:
        b = to_batch(raw, list(desc.levels))
        yield b.images, b.labels


def measure(batches, model, criterion, optimizer, device, steps: int, warmup: int) -> float:
    amp = device.type == "cuda"
    fmt = torch.channels_last if amp else torch.contiguous_format
    done, start = 0, None
    for i, (images, labels) in enumerate(itertools.islice(batches, warmup + steps)):
        if i == warmup:
            if amp:
                torch.cuda.synchronize()
            start = time.perf_counter()
        images = images.to(device, non_blocking=True, memory_format=fmt)
        labels = labels.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = criterion(model(images), labels)
        optimizer_step(loss, model, optimizer, None, 1.0)
        done += len(images) if i >= warmup else 0
    if amp:
        torch.cuda.synchronize()
    return done / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True, help="dataset.json")
    p.add_argument("--backbone", default="resnet50", choices=BACKBONES)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10)
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    desc = data.load_dataset_descriptor(args.dataset)
    tables = load_class_tables(desc.level_files)
    cfg = TrainConfig(dataset=args.dataset, output_dir="-", image_size=args.image_size,
                      batch_size=args.batch_size, workers=args.workers)
    results = {}
    for name, batches in (("synthetic", synthetic_batches(args.batch_size, args.image_size,
                                                          tables.num_classes)),
                          ("real loader", real_batches(desc, cfg))):
        model = build_model(args.backbone, tables.num_classes).to(device)
        if device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        criterion = HierarchicalLoss(tables).to(device)
        model.train()
        results[name] = measure(batches, model, criterion, optimizer, device, args.steps,
                                args.warmup)
        print(f"{name:12s} {results[name]:9.1f} images/s ({args.backbone}, {device})")
    print(f"real / synthetic: {results['real loader'] / results['synthetic']:.1%}")


if __name__ == "__main__":
    main()
