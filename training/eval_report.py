"""The evaluation report: ``report.html`` with a folium map of predictions against truth,
the error histogram, reliability diagrams, a per-class table, Grad-CAM overlays and the
headline figures; ``metrics.json`` next to it. Figures are PNG files beside the HTML, drawn
by ``geo_assets.plots`` and ``geo_assets.mapviz``; this module lays out the page."""

from __future__ import annotations

import html
from pathlib import Path

from geo_assets import layout, mapviz, plots
from geo_assets.storage import atomic_path, write_json_atomic
from training.metrics import RADII_KM

MAP_POINTS = 400


def write_file(path: Path, data: bytes) -> str:
    """Write ``data`` to ``path`` atomically; returns the file name (for links in the page)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path.name


def predictions_map(rows: list[dict]) -> bytes:
    """The map of the first MAP_POINTS predictions against truth."""
    shown = rows[:MAP_POINTS]
    return mapviz.predictions_map_html(
        [r["true_lat_deg"] for r in shown], [r["true_lon_deg"] for r in shown],
        [r["pred_lat_deg"] for r in shown], [r["pred_lon_deg"] for r in shown],
        [f"{r['image_id']}: {r['error_km']:.0f} km" for r in shown])


def write_figures(out_dir: Path, metrics: dict, rows: list[dict], overlays: list,
                  captions: list[str]) -> list[str]:
    """Draw the report's PNG figures into ``out_dir``; returns their file names."""
    coarse = str(metrics["levels"][0])
    reliability = metrics["reliability"][coarse]
    figures = {
        layout.ERROR_HISTOGRAM_FILE: plots.error_histogram_png(
            [r["error_km"] for r in rows], RADII_KM[1:]),
        layout.RELIABILITY_FILE: plots.reliability_png(reliability["before"],
                                                       reliability["after"], coarse)}
    if coarse in metrics["confusion"]:
        figures[layout.CONFUSION_FILE] = plots.confusion_png(
            metrics["confusion"][coarse], metrics["per_class"][coarse]["cell_id"], coarse)
    if overlays:
        figures[layout.GRADCAM_FILE] = plots.gradcam_grid_png(overlays, captions)
    return [write_file(out_dir / name, png) for name, png in figures.items()]


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
                 captions: list[str], title: str = "geoscout evaluation") -> Path:
    """Write metrics.json, the figures and report.html into ``out_dir``; returns the HTML path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / layout.METRICS_FILE, metrics, indent=2, sort_keys=False)
    figures = write_figures(out_dir, metrics, rows, overlays, captions)
    map_name = write_file(out_dir / layout.PREDICTIONS_MAP_FILE, predictions_map(rows))
    images = "".join(f'<p><img src="{name}" style="max-width:100%"></p>' for name in figures)
    body = (f"<h1>{html.escape(title)}</h1><h2>Headline</h2>"
            + table(["figure", "value"], [[k, v] for k, v in metrics["headline"].items()])
            + "<h2>Per level</h2>" + level_table(metrics)
            + "<h2>Distance (finest level)</h2>" + distance_table(metrics)
            + f'<h2>Predictions vs truth</h2><p>green: truth, red: prediction (first '
            f'{MAP_POINTS}); <a href="{map_name}">open the map</a></p>'
            f'<iframe src="{map_name}" width="100%" height="480"></iframe>'
            + "<h2>Figures</h2>" + images + "<h2>Per class</h2>" + per_class_table(metrics))
    path = out_dir / layout.REPORT_HTML_FILE
    write_file(path, (f"<!doctype html><html><head><meta charset='utf-8'><title>"
                      f"{html.escape(title)}</title><style>{STYLE}</style></head>"
                      f"<body>{body}</body></html>").encode())
    return path
