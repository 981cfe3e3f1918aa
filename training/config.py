"""Training settings as a frozen dataclass, so training code never depends on argparse."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class TrainConfig:
    dataset: str
    output_dir: str
    run_name: str = "run"
    # data
    val_fold: int = 0
    train_folds: tuple[int, ...] | None = None
    image_size: int = 128
    batch_size: int = 64
    workers: int = 2
    epoch_samples: int | None = None
    # model
    backbone: str = "tiny"
    pretrained: bool = False
    weights_dir: str | None = None
    download_weights: bool = False
    dropout: float = 0.0
    freeze_stages: int = 0
    # loss
    label_smoothing: float = 0.1
    haversine_tau_km: str | None = None
    level_weights: tuple[float, ...] | None = None
    # optimisation
    opt: str = "adamw"
    lr: float = 2e-3
    momentum: float = 0.9
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.01
    clip_grad_norm: float = 1.0
    epochs: int = 10
    # mixed precision and device
    amp: str = "auto"
    amp_dtype: str = "bfloat16"
    channels_last: str = "auto"
    device: str = "auto"
    threads: int | None = None
    # checkpoints and stopping
    checkpoint_every: int = 100
    resume: str | None = None
    stop_after_steps: int | None = None
    patience: int = 3
    min_delta: float = 0.0
    # reproducibility and output
    seed: int = 0
    deterministic: bool = False
    print_freq: int = 20
    calibrate: bool = True

    @classmethod
    def from_namespace(cls, ns) -> TrainConfig:
        values = {f.name: getattr(ns, f.name) for f in fields(cls) if hasattr(ns, f.name)}
        for name in ("train_folds", "level_weights"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)

    def hash(self) -> str:
        """Hash of the settings that change the result (not paths, resume or logging)."""
        skip = {"output_dir", "resume", "stop_after_steps", "print_freq", "workers", "run_name"}
        blob = json.dumps({k: v for k, v in self.to_dict().items() if k not in skip},
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
