"""Frozen-encoder training (``--encoder frozen``): the heads alone, on cached embeddings.

The pretrained backbone encodes the dataset once (``training.embeddings``; re-used by later
runs on the same dataset, backbone and input); then each epoch is a pass of the heads (the
hierarchical class heads and, with ``--location-head``, the offset head, linear or ``--head
mlp``) over the training folds' cached features, seconds on a CPU. Everything else is the
fine-tuning recipe's own code (``training.train``): the loss settings (label smoothing,
haversine smoothing, level weights, offset loss), optimizer and schedule, validation on the
validation fold with early stopping on its NLL (the best heads kept in memory, no
``best.pth``), then the validation decisions
(temperatures, location estimator, retrieval index; ``training.validation.decide``) and
``model.pt`` + the model card (``train.finish``). ``model.pt`` is an ordinary model (the
pretrained backbone, unchanged, plus the trained heads), so evaluation, ``predict`` and export
need nothing new.

Not used in this mode: augmentation (features are of the evaluation transform), ``--resume``
and step checkpoints (a run takes seconds after the encoding, which the cache keeps), several
processes (one process encodes and trains). ``--class-balance`` resamples the cached training
images with the stream's keep probabilities.
"""

from __future__ import annotations

import logging
import time

import torch
from torch import nn

from geo_assets.errors import InputError
from geo_assets.progress import progress
from training import embeddings, sampling
from training.batches import Batch
from training.embeddings import EmbeddingPart
from training.models import GeoModel
from training.train import (
    Runtime,
    TrainState,
    autocast,
    decide,
    evaluate,
    finish,
    optimizer_step,
    run_dir,
    update_early_stopping,
)
from training.validation import ValOutputs, build_index

log = logging.getLogger("geoscout.training")
EVAL_CHUNK = 1024  # cached images per evaluation batch


class HeadsOnFeatures(nn.Module):
    """A ``GeoModel``'s heads with its interface, fed pooled features instead of images, so
    that ``train.evaluate`` and ``validation.decide`` run unchanged on cached embeddings."""

    def __init__(self, model: GeoModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, pooled: torch.Tensor, with_offsets: bool = False):
        return self.model.head_outputs(pooled.float(), with_offsets)

    def outputs(self, pooled: torch.Tensor):
        logits, offsets = self.model.head_outputs(pooled.float(), with_offsets=True)
        return logits, offsets if self.model.offsets is not None else None, pooled.float()


def check(cfg, dist) -> None:
    """Refuse what the mode cannot do, before anything is built."""
    if dist.world_size > 1:
        raise InputError(f"--encoder frozen trains in one process, not {dist.world_size}: "
                         "launch it without torchrun's --nproc_per_node (or with 1)")
    if cfg.resume is not None:
        log.info("--encoder frozen keeps no step checkpoints: --resume %s ignored (the "
                 "embedding cache makes a new run take seconds)", cfg.resume)
    if cfg.augment != "standard":
        log.info("--encoder frozen trains on un-augmented features: --augment %s has no "
                 "effect", cfg.augment)


def batches(part: EmbeddingPart, size: int, order: torch.Tensor | None = None):
    """``Batch``es whose ``images`` are the cached features (float32)."""
    order = torch.arange(len(part)) if order is None else order
    for start in range(0, len(order), size):
        idx = order[start:start + size]
        yield Batch(part.embeddings[idx].float(), part.labels[idx], part.true_deg[idx],
                    [part.image_ids[i] for i in idx.tolist()])


def epoch_order(rt: Runtime, part: EmbeddingPart, epoch: int) -> torch.Tensor:
    """The epoch's ``steps x batch`` image indices: shuffled passes over the training images,
    or, with --class-balance, draws weighted by the stream's keep probabilities."""
    gen = torch.Generator().manual_seed(rt.cfg.seed + 1000 * epoch)
    total = rt.steps_per_epoch * rt.cfg.batch_size
    if rt.cfg.class_balance > 0:
        finest = rt.info.levels[-1]
        keep = torch.as_tensor(sampling.keep_probabilities(rt.info.level_files[finest],
                                                           rt.cfg.class_balance))
        weights = keep[part.labels[:, -1]].double()
        return torch.multinomial(weights, total, replacement=True, generator=gen)
    passes = -(-total // len(part))
    return torch.cat([torch.randperm(len(part), generator=gen) for _ in range(passes)])[:total]


def head_step(rt: Runtime, batch: Batch) -> float:
    """``train.train_step`` on features: the same losses, one optimizer step."""
    batch = batch.to(rt.dist.device)
    with autocast(rt):
        logits, offsets = rt.bare.head_outputs(batch.images, with_offsets=True)
        loss = rt.criterion(logits, batch.labels, batch.true_deg)
        if rt.offset_loss is not None:
            loss = loss + rt.cfg.offset_loss_weight * rt.offset_loss(
                offsets, batch.labels[:, -1], batch.true_deg)
    optimizer_step(loss, rt.bare, rt.optimizer, rt.scaler, rt.cfg.clip_grad_norm)
    rt.scheduler.step()
    return float(loss.detach())


def head_state(model: GeoModel) -> dict[str, torch.Tensor]:
    """A copy of everything but the (unchanging) backbone's tensors."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()
            if not k.startswith("backbone.")}


def fit_heads(rt: Runtime, state: TrainState, train: EmbeddingPart,
              val: EmbeddingPart) -> tuple[list[float], dict[str, torch.Tensor]]:
    """The epoch loop of ``train.fit`` on cached features; returns each epoch's seconds
    (training and validation; kept out of the history, which must replay exactly) and the
    best epoch's heads (kept in memory: no backbone-sized ``best.pth`` per epoch)."""
    heads, seconds, best = HeadsOnFeatures(rt.bare), [], {}
    bar = progress(rt.cfg.epochs, desc="training heads", unit="epoch",
                   write=rt.reporter.progress_write())
    while state.epoch < rt.cfg.epochs and not state.stopped_early:
        started = time.perf_counter()
        rt.bare.train()
        for batch in batches(train, rt.cfg.batch_size, epoch_order(rt, train, state.epoch)):
            head_step(rt, batch)
            state.global_step += 1
        level_metrics, _, _ = evaluate(heads, batches(val, EVAL_CHUNK), rt.tables,
                                       rt.dist.device, lambda: autocast(rt))
        update_early_stopping(rt, state, level_metrics,
                              save_best=lambda: best.update(head_state(rt.bare)))
        seconds.append(round(time.perf_counter() - started, 4))
        rt.reporter.info(f"epoch {state.epoch + 1}/{rt.cfg.epochs} (frozen encoder, "
                         f"{seconds[-1]:.2f} s) validation top-1 per level "
                         f"{[round(m['top1'], 4) for m in level_metrics]} "
                         f"nll {[round(m['nll'], 3) for m in level_metrics]}")
        state.epoch += 1
        bar.update(1)
    bar.close()
    return seconds, best


def retrieval_index(rt: Runtime, train: EmbeddingPart):
    """``train.retrieval_index`` from the cache: the frozen backbone's features are the
    trained model's (the backbone did not change)."""
    outputs = ValOutputs([], train.labels, train.true_deg, None, train.embeddings.float())
    return build_index(outputs, rt.cfg.retrieval_max_images)


def train_heads(rt: Runtime, folds: list[int]) -> dict | None:
    """Encode (or re-use) the embeddings, train the heads, decide on validation, write
    ``model.pt`` and the card; returns the card."""
    started = time.perf_counter()
    if len(rt.info.folds()) and rt.cfg.val_fold not in rt.info.folds():
        raise InputError(f"--val-fold {rt.cfg.val_fold} is not a fold of the dataset "
                         f"{rt.info.folds()}")
    cache = embeddings.load_or_build(
        rt.bare, rt.cfg.backbone, rt.info, image_size=rt.cfg.image_size,
        batch_size=rt.cfg.batch_size, workers=rt.cfg.loader_workers(), device=rt.dist.device,
        run_folder=run_dir(rt.cfg), amp_ctx=lambda: autocast(rt))
    train, val = cache.select("train", folds), cache.select("train", [rt.cfg.val_fold])
    if len(train) == 0:
        raise InputError(f"no cached training images in folds {folds}")
    rt.reporter.info(f"frozen {rt.cfg.backbone}: heads on {len(train)} cached training "
                     f"images, {len(val)} validation ({'encoded' if cache.built else 're-used'}"
                     f" {cache.path.name}, {cache.seconds:.1f} s)")
    state = TrainState()
    epoch_seconds, best = fit_heads(rt, state, train, val)
    rt.bare.load_state_dict({**rt.bare.state_dict(), **best})
    index, why = retrieval_index(rt, train)
    temperatures, val_metrics, decisions = decide(rt, HeadsOnFeatures(rt.bare),
                                                  list(batches(val, EVAL_CHUNK)), index, why)
    decisions["frozen_encoder"] = {"cache": cache.summary(), "epoch_seconds": epoch_seconds}
    return finish(rt, state, temperatures, val_metrics, time.perf_counter() - started,
                  decisions)
