"""``MODEL_CARD.md``: the README-style model card that travels with an exported model (data,
splits, metrics with baselines, intended use, limits, licence of the imagery), rendered from
the Jinja2 template ``training/templates/model_card.md.j2``. Reads the machine card
(``model_card.json``, keys from ``geo_assets.model_card``) and the evaluation's metrics.json;
adds nothing to either."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from geo_assets import layout
from geo_assets import model_card as mc
from training.bundle import ModelBundle


def imagery_licences(card: dict | None) -> list[tuple[str, int]]:
    """Licences of the kept images in the data root's manifest (from the card's dataset path:
    <root>/datasets/dataset.json), most common first; empty when the manifest is not there."""
    dataset = (card or {}).get(mc.DATASET)
    if not dataset:
        return []
    manifest = Path(dataset).resolve().parent.parent / layout.IMAGE_MANIFEST
    if not manifest.is_file():
        return []
    import pyarrow.parquet as pq

    table = pq.read_table(manifest, columns=["license", "kept"]).to_pydict()
    counts = Counter(lic or "unknown" for lic, kept in zip(table["license"], table["kept"])
                     if kept)
    return counts.most_common()


def baseline_rows(metrics: dict | None) -> tuple[list[str], list[dict]]:
    section = (metrics or {}).get("baselines") or {}
    if not section:
        return [], []
    names = list(section["baselines"])
    return names, [{"metric": m, "model": section["model"][m],
                    "cells": [(section["baselines"][b][m], section["verdicts"][b][m])
                              for b in names]} for m in section["metrics"]]


def training_mode(config: dict) -> str:
    """How the backbone was trained and what the heads are (older cards: fine-tuned, linear)."""
    encoder = ("frozen encoder: pretrained weights unchanged, heads trained on cached "
               "embeddings" if config.get("encoder") == "frozen" else "fine-tuned")
    heads = f"mlp heads ({config.get('head_hidden')} hidden units)" \
        if config.get("head") == "mlp" else "linear heads"
    return f"{encoder}; {heads}"


def model_card_markdown(bundle: ModelBundle, card: dict | None, metrics: dict | None,
                        exports: list[str]) -> str:
    from training.eval_report import environment

    card = card or {}
    names, rows = baseline_rows(metrics)
    config = card.get(mc.CONFIG) or {}
    return environment().get_template("model_card.md.j2").render(
        run_name=card.get(mc.RUN_NAME) or bundle.info.get(mc.RUN_NAME, "unknown"),
        created_at=card.get(mc.CREATED_AT, "unknown"), backbone=config.get("backbone", ""),
        mode=training_mode(config),
        levels=bundle.tables.level_ids, num_classes=bundle.tables.num_classes,
        image_size=bundle.image_size, mean=bundle.mean, std=bundle.std,
        dataset=card.get(mc.DATASET, "unknown"), split=card.get(mc.SPLIT) or {},
        n_train=card.get(mc.N_TRAIN_IMAGES), epochs=card.get(mc.EPOCHS_RUN),
        temperatures=bundle.temperatures, licences=imagery_licences(card),
        metrics=metrics, headline=(metrics or {}).get("headline", {}), baselines=names,
        baseline_rows=rows, exports=exports,
        demo_world=bool((metrics or {}).get("demo_world")))
