"""The evaluation report: ``report.html`` rendered from the Jinja2 template
``training/templates/report.html.j2`` (package data), with the baseline verdicts, a static map
of predictions against truth (plus a folium map that needs internet), the error histogram,
reliability diagrams, the confusion matrix, an embeddings view, Grad-CAM overlays and per-class
tables named by place; ``metrics.json`` next to it. Figures are PNG files beside the HTML,
drawn by ``geo_assets.plots`` and ``geo_assets.mapviz``; this module gathers the page's data.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np

from geo_assets import layout, mapviz, plots
from geo_assets.admin import COAST_KM
from geo_assets.storage import atomic_path, write_json_atomic
from training.baselines import BOOTSTRAP
from training.metrics import RADII_KM

MAP_POINTS = 400
DISTANCE_KEYS = ["median_km", "mean_km", "geoguessr"] + [f"acc_{r:g}km" for r in RADII_KM]


def fmt(value) -> str:
    """Numbers as a person reads them: 3 decimals below 10, whole numbers above."""
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:,.0f}" if abs(value) >= 10 else f"{value:.3f}"
    return str(value)


@lru_cache(maxsize=1)
def environment():
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("training", "templates"),
                             autoescape=lambda name: bool(name) and ".html" in name,
                             undefined=jinja2.StrictUndefined)
    env.filters["fmt"] = fmt
    return env


def write_file(path: Path, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically; returns the file name (for links in the page)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path.name


def predictions_map(rows: list[dict]) -> bytes:
    """The interactive map of the first MAP_POINTS predictions against truth."""
    shown = rows[:MAP_POINTS]
    return mapviz.predictions_map_html(
        [r["true_lat_deg"] for r in shown], [r["true_lon_deg"] for r in shown],
        [r["pred_lat_deg"] for r in shown], [r["pred_lon_deg"] for r in shown],
        [f"{r['image_id']}: {r['error_km']:.0f} km" for r in shown])


def predictions_png(rows: list[dict]) -> bytes:
    """The static (offline) map of the same points over the embedded Natural Earth land."""
    from geo_assets.naturalearth import embedded_land

    shown = rows[:MAP_POINTS]
    lat = [r["true_lat_deg"] for r in shown] + [r["pred_lat_deg"] for r in shown]
    lon = [r["true_lon_deg"] for r in shown] + [r["pred_lon_deg"] for r in shown]
    colours = ["#2e7d32"] * len(shown) + ["#c62828"] * len(shown)
    return mapviz.points_png(lat, lon, colours, land=embedded_land(),
                             title="test images: truth (green) and prediction (red)",
                             legend={"truth": "#2e7d32", "prediction": "#c62828"})


def embeddings_figure(features, groups: list[int], names: list[str], seed: int = 0) -> bytes:
    """t-SNE (scikit-learn) of test image embeddings, coloured by true coarsest class."""
    from sklearn.manifold import TSNE

    x = np.asarray(features, dtype=np.float32)
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    return plots.embeddings_png(xy, groups, names)


def write_figures(out_dir: Path, metrics: dict, rows: list[dict], overlays: list,
                  captions: list[str], embeddings=None) -> list[dict]:
    """Draw the report's PNG figures into ``out_dir``; returns file names and captions."""
    coarse = str(metrics["levels"][0])
    places = metrics.get("class_countries", [[]])[0]
    reliability = metrics["reliability"][coarse]
    figures = [
        (layout.ERROR_HISTOGRAM_FILE, "great-circle error of the location estimate",
         lambda: plots.error_histogram_png([r["error_km"] for r in rows], RADII_KM[1:])),
        (layout.RELIABILITY_FILE, (f"reliability at level {coarse}, before and after "
         "temperature scaling"), lambda: plots.reliability_png(
             reliability["before"], reliability["after"], coarse))]
    if coarse in metrics["confusion"]:
        labels = metrics["per_class"][coarse]["cell_id"]
        if places:
            labels = [f"{c} {p}" for c, p in zip(labels, places)]
        figures.append((layout.CONFUSION_FILE, f"confusion matrix at level {coarse}",
                        lambda: plots.confusion_png(metrics["confusion"][coarse], labels, coarse)))
    if embeddings is not None and len(embeddings) >= 5:
        groups = [r["true_coarse"] for r in rows[:len(embeddings)]]
        figures.append((layout.EMBEDDINGS_FILE, ("t-SNE of test image embeddings (the trained "
                        "model's pooled features), coloured by true coarsest class"),
                        lambda: embeddings_figure(embeddings, groups, places)))
    if overlays:
        figures.append((layout.GRADCAM_FILE, ("Grad-CAM: where the model looked (predicted / "
                        "true place at the coarsest level)"),
                        lambda: plots.gradcam_grid_png(overlays, captions)))
    return [{"file": write_file(out_dir / name, draw()), "caption": caption}
            for name, caption, draw in figures]


def per_class_rows(metrics: dict) -> list[tuple[str, list[dict]]]:
    """Per level, the classes with test support, named by their centroid's country."""
    out = []
    for k, (lv, scores) in enumerate(metrics["per_class"].items()):
        places = metrics.get("class_countries", [])
        names = places[k] if k < len(places) else [""] * len(scores["cell_id"])
        rows = [{"cell": c, "place": n, "precision": p, "recall": r, "f1": f, "support": s}
                for c, n, p, r, f, s in zip(scores["cell_id"], names, scores["precision"],
                                            scores["recall"], scores["f1"], scores["support"])
                if s > 0]
        out.append((lv, rows))
    return out


def baseline_rows(section: dict | None) -> list[dict]:
    if not section:
        return []
    return [{"metric": m, "model": section["model"][m],
             "cells": [{"value": section["baselines"][b][m], "verdict": section["verdicts"][b][m]}
                       for b in section["baselines"]]} for m in section["metrics"]]


def page_context(metrics: dict, figures: list[dict], map_html: str, map_png: str | None,
                 title: str) -> dict:
    section = metrics.get("baselines") or {}
    headline = [(k, v) for k, v in metrics["headline"].items() if k != "verdict"]
    return {"title": title, "model": metrics.get("model", {"path": ""}),
            "n_test": metrics["n_test"], "demo_world": metrics.get("demo_world", False),
            "verdict": metrics["headline"].get("verdict", "No baselines were computed."),
            "beats_all": metrics["headline"].get("beats_all_baselines", False),
            "headline": headline, "baselines": list(section.get("baselines", {})),
            "baseline_rows": baseline_rows(section), "about": list(section.get("about", {})
                                                                   .items()),
            "n_reference": section.get("n_reference", 0), "resamples": BOOTSTRAP,
            "n_with_country": section.get("n_with_country", 0), "coast_km": COAST_KM,
            "countries_source": section.get("countries_source", ""),
            "level_rows": [{"level": lv, "variant": name, **m}
                           for lv, variants in metrics["per_level"].items()
                           for name, m in variants.items()],
            "distance_keys": DISTANCE_KEYS, "distance_rows": list(metrics["distance"].items()),
            "map_points": MAP_POINTS, "map_html": map_html, "map_png": map_png,
            "figures": figures, "per_class": per_class_rows(metrics)}


def write_report(out_dir: Path, metrics: dict, rows: list[dict], overlays: list,
                 captions: list[str], title: str = "geoscout evaluation",
                 embeddings=None) -> Path:
    """Write metrics.json, the figures and report.html into ``out_dir``; returns the HTML path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / layout.METRICS_FILE, metrics, indent=2, sort_keys=False)
    figures = write_figures(out_dir, metrics, rows, overlays, captions, embeddings)
    map_html = write_file(out_dir / layout.PREDICTIONS_MAP_FILE, predictions_map(rows))
    map_png = write_file(out_dir / layout.PREDICTIONS_PNG_FILE, predictions_png(rows)) \
        if rows else None
    html = environment().get_template("report.html.j2").render(
        **page_context(metrics, figures, map_html, map_png, title))
    path = out_dir / layout.REPORT_HTML_FILE
    write_file(path, html.encode())
    return path
