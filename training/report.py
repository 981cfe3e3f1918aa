"""The evaluation report: ``report.html`` with a folium map of predictions against truth,
the error histogram, reliability diagrams, a per-class table, Grad-CAM overlays and the
headline figures; ``metrics.json`` next to it. Figures are PNG files beside the HTML."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from geo_assets.storage import atomic_path
from training.metrics import RADII_KM

MAP_POINTS = 400


def write_json(path: Path, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=float))


def save_figure(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path.name


def error_histogram(rows: list[dict], path: Path) -> str:
    errors = np.array([r["error_km"] for r in rows]) if rows else np.zeros(1)
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    bins = np.logspace(0, np.log10(20_040), 40)
    ax.hist(np.clip(errors, 1, None), bins=bins, color="#3b75af")
    ax.set_xscale("log")
    for r in RADII_KM[1:]:
        ax.axvline(r, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("great-circle error (km, log scale)")
    ax.set_ylabel("test images")
    return save_figure(fig, path)


def reliability_diagram(bins_before: list, bins_after: list, level: str, path: Path) -> str:
    fig = Figure(figsize=(8, 3.6))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, bins, title in zip(axes, (bins_before, bins_after), ("before", "after")):
        b = np.array(bins)
        n = len(b)
        centres = (np.arange(n) + 0.5) / n
        acc = np.divide(b[:, 2], b[:, 0], out=np.zeros(n), where=b[:, 0] > 0)
        ax.bar(centres, acc, width=1 / n, edgecolor="black", color="#6aa84f", label="accuracy")
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        ax.set_title(f"level {level}, {title} temperature scaling")
        ax.set_xlabel("confidence")
    axes[0].set_ylabel("accuracy")
    return save_figure(fig, path)


def confusion_figure(matrix: list, labels: list[str], level: str, path: Path) -> str:
    m = np.array(matrix, dtype=float)
    m = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    fig = Figure(figsize=(5, 4.5))
    ax = fig.subplots()
    ax.imshow(m, cmap="Blues", vmin=0, vmax=1)
    if len(labels) <= 24:
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("predicted cell")
    ax.set_ylabel("true cell")
    ax.set_title(f"confusion (row-normalised), level {level}")
    return save_figure(fig, path)


def gradcam_figure(overlays: list, captions: list[str], path: Path) -> str:
    cols = min(4, max(1, len(overlays)))
    rows = max(1, -(-len(overlays) // cols))
    fig = Figure(figsize=(3 * cols, 3.2 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, caption in zip(axes.flat, overlays, captions):
        ax.imshow(img)
        ax.set_title(caption, fontsize=8)
    return save_figure(fig, path)


def prediction_map(rows: list[dict], path: Path) -> str:
    import folium

    m = folium.Map(location=[20, 0], zoom_start=2, tiles=None, world_copy_jump=True)
    folium.TileLayer("OpenStreetMap", name="map (needs network)").add_to(m)
    for r in rows[:MAP_POINTS]:
        truth = (r["true_lat_deg"], r["true_lon_deg"])
        guess = (r["pred_lat_deg"], r["pred_lon_deg"])
        tip = html.escape(f"{r['image_id']}: {r['error_km']:.0f} km")
        folium.PolyLine([truth, guess], color="grey", weight=1, opacity=0.6).add_to(m)
        folium.CircleMarker(truth, radius=3, color="green", fill=True, tooltip=tip).add_to(m)
        folium.CircleMarker(guess, radius=3, color="red", fill=True, tooltip=tip).add_to(m)
    m.save(str(path))
    return path.name


def table(headers: list[str], rows: list[list]) -> str:
    def cell(v):
        return f"{v:.4g}" if isinstance(v, float) else html.escape(str(v))
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def level_table(metrics: dict) -> str:
    rows = []
    for lv, variants in metrics["per_level"].items():
        for name, m in variants.items():
            rows.append([lv, name, m["top1"], m["top5"], m["nll"], m["ece"]])
    return table(["level", "inference", "top-1", "top-5", "NLL", "ECE"], rows)


def distance_table(metrics: dict) -> str:
    keys = ["median_km", "mean_km", "geoguessr"] + [f"acc_{r:g}km" for r in RADII_KM]
    rows = [[name] + [m.get(k, float("nan")) for k in keys]
            for name, m in metrics["distance"].items()]
    return table(["inference"] + keys, rows)


def per_class_table(metrics: dict) -> str:
    out = []
    for lv, scores in metrics["per_class"].items():
        rows = [[c, p, r, f, s] for c, p, r, f, s in zip(scores["cell_id"], scores["precision"],
                                                          scores["recall"], scores["f1"],
                                                          scores["support"])]
        out.append(f"<h3>level {html.escape(lv)}</h3>"
                   + table(["cell", "precision", "recall", "F1", "support"], rows))
    return "".join(out)


STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:"
         "collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:2px 6px;font-size:13px}")


def write_report(out_dir: Path, metrics: dict, rows: list[dict], overlays: list,
                 captions: list[str], mean, std, title: str = "geoscout evaluation") -> Path:
    """Write metrics.json, the figures and report.html into ``out_dir``; returns the HTML path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "metrics.json", metrics)
    coarse = str(metrics["levels"][0])
    figures = [error_histogram(rows, out_dir / "error_histogram.png"),
               reliability_diagram(metrics["reliability"][coarse]["before"],
                                   metrics["reliability"][coarse]["after"], coarse,
                                   out_dir / "reliability.png")]
    if coarse in metrics["confusion"]:
        figures.append(confusion_figure(metrics["confusion"][coarse],
                                        metrics["per_class"][coarse]["cell_id"], coarse,
                                        out_dir / "confusion.png"))
    if overlays:
        figures.append(gradcam_figure(overlays, captions, out_dir / "gradcam.png"))
    map_name = prediction_map(rows, out_dir / "map.html")
    images = "".join(f'<p><img src="{name}" style="max-width:100%"></p>' for name in figures)
    body = (f"<h1>{html.escape(title)}</h1><h2>Headline</h2>"
            + table(["figure", "value"], [[k, v] for k, v in metrics["headline"].items()])
            + "<h2>Per level</h2>" + level_table(metrics)
            + "<h2>Distance (finest level)</h2>" + distance_table(metrics)
            + f'<h2>Predictions vs truth</h2><p>green: truth, red: prediction (first '
            f'{MAP_POINTS}); <a href="{map_name}">open the map</a></p>'
            f'<iframe src="{map_name}" width="100%" height="480"></iframe>'
            + "<h2>Figures</h2>" + images + "<h2>Per class</h2>" + per_class_table(metrics))
    path = out_dir / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>"
                       f"{html.escape(title)}</title><style>{STYLE}</style></head>"
                       f"<body>{body}</body></html>")
    return path
