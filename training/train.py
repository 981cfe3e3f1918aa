"""Train a hierarchical geolocation model on WebDataset shards.

Longer than the ~450-line guide on purpose for now: it is the one readable recipe (as
torchvision's references keep theirs); moving checkpoint/resume into ``training/checkpoint.py``
is the next split.

    python -m training.train --dataset DATA/datasets/dataset.json --output-dir DATA/models/run
    torchrun --nproc_per_node 2 -m training.train ...        # DDP (gloo on CPU, nccl on GPU)

Recipe order in ``main``: data -> model -> loss -> optimizer -> scheduler -> DDP -> resume ->
epoch loop (train, validate on the validation fold, checkpoint, early stop) -> on validation:
temperatures and the location estimator (training/validation.py) -> model.pt + model card.
The test split is never read here.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from geo_assets import layout
from geo_assets import model_card as mc
from geo_assets.errors import InputError
from geo_assets.progress import progress
from training import checkpoint as ckpt
from training import data, validation
from training.batches import Batch, to_batch
from training.config import TrainConfig, add_config_flags, from_namespace
from training.distributed import (
    DistInfo,
    cleanup_distributed,
    gather_objects,
    init_distributed,
    local_processes,
    setup_logging,
)
from training.hierarchy import ClassTables, load_class_tables
from training.inference import level_log_probs
from training.losses import HierarchicalLoss, OffsetLoss
from training.metrics import LevelMetrics
from training.models import GeoModel, build_model, normalisation
from training.outputs import publish_checkpoint, run_dir, staged_run_dir, write_outputs
from training.pipes_hook import Reporter
from training.schedule import build_scheduler

log = logging.getLogger("geoscout.training")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    """The training flags, generated from ``TrainConfig`` (training/config.py)."""
    p = argparse.ArgumentParser("geoscout training", add_help=add_help,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_flags(p)
    return p


@dataclass
class TrainState:
    """Everything besides the model/optimizer that a resumed run needs: counters and the
    per-epoch history, nothing that grows with the dataset (the stream position is
    (epoch, step_in_epoch); the training image ids are derived from the folds at the end)."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best_score: float = -math.inf
    best_epoch: int = -1
    bad_epochs: int = 0
    history: list[dict] = field(default_factory=list)
    stopped_early: bool = False


@dataclass
class Runtime:
    """Objects built once in ``main`` and handed to the loop."""

    cfg: TrainConfig
    dist: DistInfo
    info: data.DatasetDescriptor
    tables: ClassTables
    model: nn.Module
    bare: GeoModel
    criterion: HierarchicalLoss
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    autocast_dtype: torch.dtype | None
    channels_last: bool
    steps_per_epoch: int
    reporter: Reporter
    offset_loss: OffsetLoss | None = None


# --- data -----------------------------------------------------------------------------------

def training_folds(cfg: TrainConfig, info) -> list[int]:
    folds = list(cfg.train_folds) if cfg.train_folds else [f for f in info.folds()
                                                             if f != cfg.val_fold]
    if cfg.val_fold in folds:
        raise InputError(f"--val-fold {cfg.val_fold} is also a training fold")
    if not folds:
        raise InputError(f"no training folds left besides validation fold {cfg.val_fold}")
    return folds


def load_data(cfg: TrainConfig, info, folds: list[int], train: bool, split="train",
              norm: tuple[tuple[float, ...], tuple[float, ...]] | None = None):
    """A loader from training/data.py (shards split by node and by worker); ``norm``: the
    backbone's (mean, std), ImageNet's by default."""
    epoch_samples = (cfg.epoch_samples or info.count("train", folds)) if train else None
    extra = {"mean": norm[0], "std": norm[1]} if norm else {}
    if train:
        extra.update(class_balance=cfg.class_balance, augment=cfg.augment)
    return data.make_loader(info, split=split, folds=folds, image_size=cfg.image_size,
                            batch_size=cfg.batch_size, train=train,
                            num_workers=cfg.loader_workers(local_processes()),
                            epoch_samples=epoch_samples, seed=cfg.seed, **extra)


def cycle_batches(loader, levels: list[int]):
    """Endless stream of ``Batch``es; a finite loader is simply restarted."""
    while True:
        empty = True
        for raw in loader:
            empty = False
            yield to_batch(raw, levels)
        if empty:
            raise RuntimeError("the training loader yielded no batch: check the shard list")


def epoch_stream(rt: Runtime, make_loader, state: TrainState, pending_rng: dict | None):
    """This epoch's batches from a fresh loader, re-seeded per epoch and rank, so a resumed run
    replays the consumed batches, then continues from the saved RNG state exactly. (A fresh
    loader also resets webdataset's per-iteration counters, e.g. ResampledShards.epoch.)"""
    ckpt.seed_everything(rt.cfg.seed + 1000 * state.epoch + rt.dist.rank)
    loader = make_loader()
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(state.epoch)
    stream = cycle_batches(loader, rt.tables.level_ids)
    for _ in range(state.step_in_epoch):
        next(stream)
    if pending_rng is not None:
        ckpt.set_rng_state(pending_rng)
    return stream


# --- one step, one epoch, evaluation --------------------------------------------------------

def clip_grad_norm_(parameters, max_norm: float) -> torch.Tensor:
    return torch.nn.utils.clip_grad_norm_(parameters, max_norm)


def optimizer_step(loss: torch.Tensor, model: nn.Module, optimizer: torch.optim.Optimizer,
                   scaler: torch.amp.GradScaler | None, max_norm: float) -> None:
    """scale -> backward -> unscale_ -> clip -> step -> update (one optimizer step)."""
    optimizer.zero_grad(set_to_none=True)
    params = [p for p in model.parameters() if p.requires_grad]
    if scaler is None:
        loss.backward()
        if max_norm > 0:
            clip_grad_norm_(params, max_norm)
        optimizer.step()
        return
    scaler.scale(loss).backward()
    if max_norm > 0:
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        clip_grad_norm_(params, max_norm)
    scaler.step(optimizer)  # skips the step when gradients overflowed
    scaler.update()


def autocast(rt: Runtime):
    if rt.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(rt.dist.device.type, dtype=rt.autocast_dtype)


def train_step(rt: Runtime, batch: Batch) -> float:
    with autocast(rt):
        if rt.offset_loss is None:
            logits = rt.model(batch.images)
            loss = rt.criterion(logits, batch.labels, batch.true_deg)
        else:
            logits, offsets = rt.model(batch.images, with_offsets=True)
            loss = rt.criterion(logits, batch.labels, batch.true_deg) \
                + rt.cfg.offset_loss_weight * rt.offset_loss(offsets, batch.labels[:, -1],
                                                             batch.true_deg)
    optimizer_step(loss, rt.model, rt.optimizer, rt.scaler, rt.cfg.clip_grad_norm)
    rt.scheduler.step()
    return float(loss.detach())


def train_one_epoch(rt: Runtime, make_loader, state: TrainState,
                    pending_rng: dict | None) -> bool:
    """Train until the epoch's step count; False when stopped by --stop-after-steps."""
    rt.model.train()
    stream = epoch_stream(rt, make_loader, state, pending_rng)
    start, data_time, seen = time.perf_counter(), 0.0, 0
    bar = progress(rt.steps_per_epoch, desc=f"epoch {state.epoch + 1}/{rt.cfg.epochs}",
                   unit="step", disable=not rt.dist.is_main, write=rt.reporter.progress_write())
    bar.update(state.step_in_epoch)
    while state.step_in_epoch < rt.steps_per_epoch:
        if rt.cfg.stop_after_steps is not None and state.global_step >= rt.cfg.stop_after_steps:
            save_checkpoint(rt, state)
            return False
        t0 = time.perf_counter()
        batch = next(stream).to(rt.dist.device, rt.channels_last)
        data_time += time.perf_counter() - t0
        loss = train_step(rt, batch)
        state.step_in_epoch += 1
        state.global_step += 1
        bar.update(1)
        seen += len(batch.image_ids)
        if state.step_in_epoch % rt.cfg.print_freq == 0 or state.step_in_epoch == 1:
            took = time.perf_counter() - start
            log.info("epoch %d/%d step %d/%d loss %.4f lr %.2e %.1f img/s data %.0f%%",
                     state.epoch + 1, rt.cfg.epochs, state.step_in_epoch, rt.steps_per_epoch, loss,
                     rt.optimizer.param_groups[0]["lr"], seen * rt.dist.world_size / took,
                     100 * data_time / took)
        if state.global_step % rt.cfg.checkpoint_every == 0:
            save_checkpoint(rt, state)
    bar.close()
    return True


def evaluate(model: nn.Module, loader, tables: ClassTables, device: torch.device,
             amp_ctx=contextlib.nullcontext) -> tuple[list[dict], list[torch.Tensor], torch.Tensor]:
    """Per-level top-1/top-5/NLL/ECE (summed over ranks), plus this rank's logits and labels."""
    model.eval()
    metrics = [LevelMetrics(c, confusion=False) for c in tables.num_classes]
    all_logits, all_labels = [[] for _ in metrics], []
    with torch.inference_mode():
        for raw in loader:
            batch = to_batch(raw, tables.level_ids).to(device)
            with amp_ctx():
                logits = [x.float() for x in model(batch.images)]
            for k, (m, lp) in enumerate(zip(metrics, level_log_probs(logits))):
                m.update(lp, batch.labels[:, k])
                all_logits[k].append(logits[k].cpu())
            all_labels.append(batch.labels.cpu())
    for m in metrics:
        m.sync()
    if not all_labels:
        return [m.compute() for m in metrics], [torch.zeros(0, c) for c in tables.num_classes], \
            torch.zeros(0, len(metrics), dtype=torch.long)
    return [m.compute() for m in metrics], [torch.cat(x) for x in all_logits], \
        torch.cat(all_labels)


# --- checkpoints and early stopping ---------------------------------------------------------

def save_checkpoint(rt: Runtime, state: TrainState) -> None:
    """Collective: every rank's RNG state goes into rank 0's checkpoint. Its size is O(model +
    ranks + epochs), whatever the number of images: each rank's stream position is the shared
    (epoch, step_in_epoch), from which ``epoch_stream`` replays that rank's seeded stream."""
    rngs = gather_objects(ckpt.rng_state())
    if not rt.dist.is_main:
        return
    payload = {
        "format": ckpt.FORMAT_VERSION,
        "model": rt.bare.state_dict(), "optimizer": rt.optimizer.state_dict(),
        "scheduler": rt.scheduler.state_dict(),
        "scaler": rt.scaler.state_dict() if rt.scaler else None,
        "state": vars(state).copy(), "rng": rngs,
        "config": rt.cfg.to_dict(), "config_hash": rt.cfg.hash(),
        "tables_version": rt.tables.version(), "world_size": rt.dist.world_size,
    }
    out = run_dir(rt.cfg)
    ckpt.atomic_save(payload, out / layout.CHECKPOINT_FILE,
                     previous=out / layout.PREVIOUS_CHECKPOINT_FILE)
    publish_checkpoint(rt.cfg)
    log.info("checkpoint saved at step %d (epoch %d)", state.global_step, state.epoch)


def resume_path(cfg: TrainConfig) -> Path | None:
    if cfg.resume is None:
        return None
    if cfg.resume == "auto":
        out = run_dir(cfg)
        path = out / layout.CHECKPOINT_FILE
        return path if path.exists() or (out / layout.PREVIOUS_CHECKPOINT_FILE).exists() else None
    return Path(cfg.resume)


def resume(rt: Runtime, state: TrainState) -> dict | None:
    """Load the checkpoint named by --resume; returns this rank's RNG state to restore."""
    path = resume_path(rt.cfg)
    if path is None:
        return None
    out = run_dir(rt.cfg)
    saved, path, full = ckpt.load_resumable(path, out / layout.PREVIOUS_CHECKPOINT_FILE,
                                            out / layout.BEST_FILE)
    if not full:  # only best.pth was usable: its weights, everything else afresh
        rt.bare.load_state_dict(saved)
        return None
    if saved["config_hash"] != rt.cfg.hash():
        log.warning("resuming with different settings than the checkpoint's: not an exact resume")
    if saved["tables_version"] != rt.tables.version():
        raise ValueError(f"{path} was trained on other class tables: start a new run")
    ckpt.check_world_size(saved, rt.dist.world_size, path)
    rt.bare.load_state_dict(saved["model"])
    rt.optimizer.load_state_dict(saved["optimizer"])
    rt.scheduler.load_state_dict(saved["scheduler"])
    if rt.scaler is not None and saved["scaler"] is not None:
        rt.scaler.load_state_dict(saved["scaler"])
    known = set(vars(state))
    for key, value in saved["state"].items():
        if key in known:  # older checkpoints also held the seen image ids: ignored
            setattr(state, key, value)
    log.info("resumed from %s at step %d (epoch %d)", path, state.global_step, state.epoch)
    if state.step_in_epoch == 0:
        return None
    return saved["rng"][rt.dist.rank]


def validation_score(level_metrics: list[dict]) -> float:
    """Higher is better: minus the summed per-level validation NLL."""
    return -sum(m["nll"] for m in level_metrics)


def update_early_stopping(rt: Runtime, state: TrainState, level_metrics: list[dict],
                          save_best=None) -> None:
    """``save_best()``: keep the improved weights (default: ``best.pth`` on rank 0)."""
    score = validation_score(level_metrics)
    state.history.append({"epoch": state.epoch, "step": state.global_step, "score": score,
                          "val": level_metrics})
    if score > state.best_score + rt.cfg.min_delta:
        state.best_score, state.best_epoch, state.bad_epochs = score, state.epoch, 0
        if save_best is not None:
            save_best()
        elif rt.dist.is_main:
            ckpt.atomic_save(rt.bare.state_dict(), run_dir(rt.cfg) / layout.BEST_FILE)
    else:
        state.bad_epochs += 1
        state.stopped_early = rt.cfg.patience > 0 and state.bad_epochs >= rt.cfg.patience


# --- building -------------------------------------------------------------------------------

def build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if cfg.opt == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    if cfg.opt == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=True)
    raise InputError(f"Only SGD and AdamW are supported, not {cfg.opt!r}")


def precision_settings(cfg: TrainConfig, device: torch.device):
    """(autocast dtype or None, GradScaler or None, channels_last)."""
    on_cuda = device.type == "cuda"
    use_amp = cfg.amp == "on" or (cfg.amp == "auto" and on_cuda)
    dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}[cfg.amp_dtype] if use_amp \
        else None
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    channels_last = cfg.channels_last == "on" or (cfg.channels_last == "auto" and on_cuda)
    return dtype, scaler, channels_last


def configure_determinism(cfg: TrainConfig) -> None:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True)
    ckpt.seed_everything(cfg.seed)


def build_runtime(cfg: TrainConfig, dist: DistInfo, info: data.DatasetDescriptor, reporter: Reporter,
                  folds: list[int]) -> Runtime:
    tables = load_class_tables(info.level_files)
    bare = build_model(cfg.backbone, tables.num_classes, cfg.pretrained, cfg.dropout,
                       cfg.freeze_stages, Path(cfg.weights_dir) if cfg.weights_dir else None,
                       cfg.download_weights, image_size=cfg.image_size,
                       weights_file=Path(cfg.weights_file) if cfg.weights_file else None,
                       offset_head=cfg.location_head, head_hidden=cfg.hidden_units())
    if cfg.encoder == "frozen":  # before the optimizer: it sees only the heads' parameters
        bare.freeze_backbone()
    dtype, scaler, channels_last = precision_settings(cfg, dist.device)
    bare.to(dist.device, memory_format=torch.channels_last if channels_last
            else torch.contiguous_format)
    criterion = HierarchicalLoss(tables, cfg.label_smoothing, cfg.haversine_tau_km,
                                 list(cfg.level_weights) if cfg.level_weights else None)
    criterion.to(dist.device)
    offset_loss = OffsetLoss(tables).to(dist.device) if cfg.location_head else None
    samples = cfg.epoch_samples or info.count("train", folds)
    steps = max(1, math.ceil(samples / (cfg.batch_size * dist.world_size)))
    optimizer = build_optimizer(cfg, bare)
    scheduler = build_scheduler(optimizer, round(cfg.warmup_epochs * steps), cfg.epochs * steps,
                                cfg.min_lr_ratio)
    model = bare
    if dist.distributed:
        model = nn.parallel.DistributedDataParallel(
            bare, device_ids=[dist.local_rank] if dist.device.type == "cuda" else None)
    return Runtime(cfg, dist, info, tables, model, bare, criterion, optimizer, scheduler, scaler,
                   dtype, channels_last, steps, reporter, offset_loss)


# --- the recipe -----------------------------------------------------------------------------

def fit(rt: Runtime, state: TrainState, make_train_loader, val_loader,
        pending_rng: dict | None) -> bool:
    """The epoch loop; False when interrupted by --stop-after-steps."""
    overall = progress(rt.cfg.epochs, desc="training", unit="epoch", disable=not rt.dist.is_main,
                       write=rt.reporter.progress_write())
    overall.update(state.epoch)
    while state.epoch < rt.cfg.epochs and not state.stopped_early:
        if not train_one_epoch(rt, make_train_loader, state, pending_rng):
            return False
        pending_rng = None
        # the bare model: no DDP collectives, so ranks may hold different numbers of batches
        level_metrics, _, _ = evaluate(rt.bare, val_loader, rt.tables, rt.dist.device,
                                       lambda: autocast(rt))
        update_early_stopping(rt, state, level_metrics)
        rt.reporter.info(f"epoch {state.epoch + 1}/{rt.cfg.epochs} validation top-1 per level "
                         f"{[round(m['top1'], 4) for m in level_metrics]} "
                         f"nll {[round(m['nll'], 3) for m in level_metrics]}")
        state.epoch += 1
        state.step_in_epoch = 0
        save_checkpoint(rt, state)
        overall.update(1)
    overall.close()
    return True


def retrieval_index(rt: Runtime):
    """The training folds' embeddings for the 'retrieval' estimator (one evaluation pass),
    or (None, why not) above --retrieval-max-images."""
    folds = training_folds(rt.cfg, rt.info)
    n = rt.info.count("train", folds)
    if n > rt.cfg.retrieval_max_images:
        return None, (f"{n} training images, more than --retrieval-max-images "
                      f"{rt.cfg.retrieval_max_images}")
    loader = load_data(rt.cfg, rt.info, folds, train=False,
                       norm=normalisation(rt.bare.backbone))
    outputs = validation.gather(validation.collect(rt.bare, loader, rt.tables, rt.dist.device,
                                                   lambda: autocast(rt)))
    return validation.build_index(outputs, rt.cfg.retrieval_max_images)


def calibrate(rt: Runtime, val_loader) -> tuple[list[float], list[dict], dict]:
    """Best weights -> the validation decisions (training/validation.py): temperatures,
    validation metrics and what model.pt records (``calibration``, ``location``)."""
    best = run_dir(rt.cfg) / layout.BEST_FILE
    if best.exists():
        rt.bare.load_state_dict(torch.load(best, map_location=rt.dist.device, weights_only=True))
    index, why = retrieval_index(rt)
    return decide(rt, rt.bare, val_loader, index, why)


def decide(rt: Runtime, model: nn.Module, val_loader, index, why: str,
           ) -> tuple[list[float], list[dict], dict]:
    """``validation.decide`` on ``model``'s validation outputs (the frozen-encoder mode passes
    its heads on cached embeddings), the retrieval index recorded with its radius."""
    temperatures, level_metrics, decisions = validation.decide(
        model, val_loader, rt.tables, rt.dist.device, lambda: autocast(rt),
        rt.cfg.calibration_min_samples if rt.cfg.calibrate else None, index)
    location = decisions["location"]
    if index is not None:  # the density estimator's radius travels with the index
        index = dataclasses.replace(index, radius_km=location.get("density_radius_km"))
    decisions["retrieval"] = index.to_dict() if index is not None else None
    location["retrieval_index"] = why
    rt.reporter.info(f"location estimator {location['method']}: validation median km "
                     f"{location['validation_median_km']}")
    return temperatures, level_metrics, decisions


def main(cfg: TrainConfig) -> dict | None:
    """Train, calibrate and write model.pt; returns the model card on rank 0."""
    dist = init_distributed(cfg.device)
    setup_logging(dist.rank)
    configure_determinism(cfg)
    reporter = Reporter(dist.rank)
    try:
        info = data.load_dataset_descriptor(cfg.dataset)
        folds = training_folds(cfg, info)
        if cfg.encoder == "frozen":
            from training import frozen  # imports this module: loaded when first used

            frozen.check(cfg, dist)
        rt = build_runtime(cfg, dist, info, reporter, folds)
        if cfg.encoder == "frozen":
            card = frozen.train_heads(rt, folds)
            reporter.close()
            return card
        norm = normalisation(rt.bare.backbone)
        def make_train_loader():
            return load_data(cfg, info, folds, train=True, norm=norm)

        val_loader = load_data(cfg, info, [cfg.val_fold], train=False, norm=norm)
        state = TrainState()
        pending_rng = resume(rt, state)
        reporter.info(f"training {cfg.backbone} on folds {folds} ({rt.steps_per_epoch} steps "
                      f"per epoch, {dist.world_size} process(es) on {dist.device})")
        started = time.perf_counter()
        if not fit(rt, state, make_train_loader, val_loader, pending_rng):
            reporter.info(f"stopped after step {state.global_step}; resume with --resume auto")
            reporter.close()
            return None
        temperatures, val_metrics, decisions = calibrate(rt, val_loader)
        card = finish(rt, state, temperatures, val_metrics, time.perf_counter() - started,
                      decisions)
        reporter.close()
        return card
    except BaseException as exc:
        reporter.close(exc)
        raise
    finally:
        cleanup_distributed()


def finish(rt: Runtime, state: TrainState, temperatures: list[float], val_metrics: list[dict],
           seconds: float, decisions: dict | None = None) -> dict | None:
    if not rt.dist.is_main:
        return None
    card = write_outputs(rt, state, temperatures, val_metrics, seconds,
                         training_folds(rt.cfg, rt.info), decisions or {})
    rt.reporter.materialize({}, data_version=card[mc.MODEL_SHA256][:16])
    return card


def cli(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    cfg = from_namespace(args)
    with staged_run_dir(cfg):  # an s3:// --output-dir: write locally, publish to the bucket
        main(cfg)
    return 0


if __name__ == "__main__":
    sys.exit(cli())
