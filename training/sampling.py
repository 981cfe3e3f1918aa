"""Training-stream options: class-balanced sampling and the augmentation strength.

Class balance on a streamed (resampled) dataset is done by thinning: a sample of class ``c``
(its finest level) is kept with probability ``min(1, (n_median / n_c) ** power)``, where
``n_c`` is the class's training image count (``n_train`` in ``level_<L>.parquet``). Rare
classes keep every image, frequent ones are thinned; ``power`` 0 is off, 0.5 the square-root
balance, 1 full balance down to the median class. The draw is seeded per worker and epoch like
the rest of the stream, and happens before decoding, so dropped samples cost no JPEG work.

Augmentation (no horizontal flips anywhere: mirroring swaps the side of the road people drive
on, a location cue): ``standard`` = random resized crops of 35-100 % of the area and
brightness/contrast jitter of +-20 %; ``strong`` = crops of 15-100 % and jitter of +-40 %.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from geo_assets.errors import InputError

AUGMENTATIONS: dict[str, dict] = {
    "standard": {"scale": (0.35, 1.0), "jitter": 0.2},
    "strong": {"scale": (0.15, 1.0), "jitter": 0.4},
}


def augmentation(name: str) -> dict:
    if name not in AUGMENTATIONS:
        raise InputError(f"unknown augmentation {name!r}: use one of {', '.join(AUGMENTATIONS)}")
    return AUGMENTATIONS[name]


def keep_probabilities(level_file: Path, power: float) -> np.ndarray:
    """Per class of the level table, the probability of keeping one of its samples."""
    table = pq.read_table(level_file, columns=["class_index", "n_train"]).to_pydict()
    counts = np.zeros(len(table["class_index"]), dtype=float)
    counts[np.asarray(table["class_index"], dtype=int)] = table["n_train"]
    if (counts <= 0).any():
        counts = np.maximum(counts, 1.0)
    return np.minimum(1.0, (np.median(counts) / counts) ** power)


def balance_stage(keep: np.ndarray, level: int, seeder):
    """A webdataset stage that thins raw samples by their class at ``level``."""

    def stage(src):
        rng = random.Random(seeder() + 7919)  # not the shuffle's sequence
        for sample in src:
            label = int(json.loads(sample["json"])["labels"][str(level)])
            if not 0 <= label < len(keep):
                raise InputError(f"sample {sample.get('__key__')}: level {level} label {label} "
                                 "is not a class of the level table")
            if rng.random() < keep[label]:
                yield sample
    return stage
