"""Figures that are not maps (maps live in ``mapviz``), each drawn from plain data and
returned as PNG bytes, and the markdown helpers that put figures and small tables into
Dagster metadata.

Dataset: the split leakage figure and the class histograms. Evaluation: the error histogram,
the reliability diagram, the confusion matrix, the embeddings view and the Grad-CAM grid (``heatmap_overlay``
colours one Grad-CAM map over its image).

matplotlib is imported inside the functions: it is slow to import and only needed when a
figure is drawn, not when the Dagster definitions load.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

MAX_ERROR_KM = 20_040.0  # half the Earth's circumference: the largest great-circle error
CONFUSION_MAX_TICKS = 24  # label the confusion matrix's cells up to this many classes
DATASET_DPI = 90
REPORT_DPI = 110


# --- figure and PNG plumbing ---------------------------------------------------------------------

def new_figure(size_in: tuple[float, float], layout: str | None = None, dpi: float = 100):
    """A matplotlib ``Figure`` on the Agg canvas: no display, no pyplot global state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size_in, dpi=dpi, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig, dpi: float | None = None) -> bytes:
    """The figure encoded as PNG (``dpi``: the figure's own when None)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi or fig.dpi)
    return buf.getvalue()


def png_markdown(png: bytes, alt: str = "preview") -> str:
    """Markdown with the PNG inlined, for ``dg.MetadataValue.md``."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence], *, limit: int | None = None,
                   align: str | None = None) -> str:
    """A markdown table, for metadata previews. ``align`` holds one of ``l``/``r`` per column
    (default: all left); past ``limit`` rows, one last row says how many more there are."""
    align = align or "l" * len(columns)
    rows = list(rows)
    shown = rows if limit is None else rows[:limit]
    lines = ["| " + " | ".join(columns) + " |",
             "| " + " | ".join("---:" if a == "r" else "---" for a in align) + " |"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in shown]
    if len(rows) > len(shown):
        lines.append(f"| ... {len(rows) - len(shown)} more |" + " |" * (len(columns) - 1))
    return "\n".join(lines)


# --- dataset figures ---------------------------------------------------------------------------

HISTOGRAM_COLUMNS = 2  # panels per row: a row of four was too wide for the UI's panel


def class_histogram_png(train_counts: Mapping[int, Sequence[int]]) -> bytes:
    """One panel per hierarchy level (two per row): training images per class, largest class
    first, log y."""
    n = max(len(train_counts), 1)
    cols = min(n, HISTOGRAM_COLUMNS)
    rows = -(-n // cols)
    fig = new_figure((4 * cols, 3 * rows), layout="constrained")
    for i, (level, counts) in enumerate(train_counts.items()):
        counts = np.sort(np.asarray(counts))[::-1]
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.bar(np.arange(len(counts)), counts, width=1.0)
        ax.set(title=f"level {level}: {len(counts)} classes", xlabel="class (by size)",
               ylabel="training images", yscale="log")
    return figure_png(fig, DATASET_DPI)


def leakage_png(test_to_train_km, per_split: Mapping[str, Sequence],
                min_distance_km: float) -> bytes:
    """Left: log distance from each test image to its nearest training image, with the
    minimum distance marked; right: images and leakage groups per split and fold
    (``per_split`` columns ``split``, ``fold`` (-1: the test split), ``images``,
    ``leakage_groups``)."""
    fig = new_figure((9, 3), layout="constrained")
    ax = fig.add_subplot(1, 2, 1)
    d = np.asarray(test_to_train_km, dtype=np.float64)
    d = d[np.isfinite(d)]
    ax.hist(np.log10(np.maximum(d, 1e-3)), bins=40)
    ax.axvline(np.log10(max(min_distance_km, 1e-3)), color="red", label="min distance")
    ax.set(title="test image -> nearest train image", xlabel="log10 km", ylabel="images")
    ax.legend()
    ax = fig.add_subplot(1, 2, 2)
    names = [f"{s}-{'t' if f < 0 else f}" for s, f in zip(per_split["split"], per_split["fold"])]
    ax.bar(names, np.asarray(per_split["images"]), label="images")
    ax.bar(names, np.asarray(per_split["leakage_groups"]), label="leakage groups")
    ax.set(title="per split")
    ax.legend()
    return figure_png(fig, DATASET_DPI)


# --- evaluation figures ----------------------------------------------------------------------------

def error_histogram_png(errors_km, marks_km: Sequence[float] = ()) -> bytes:
    """Histogram of great-circle errors on log bins from 1 km to half the Earth's
    circumference, with dashed lines at ``marks_km`` (the accuracy radii)."""
    errors = np.asarray(errors_km, dtype=np.float64)
    if not errors.size:
        errors = np.zeros(1)
    fig = new_figure((6, 3.5), layout="tight")
    ax = fig.subplots()
    ax.hist(np.clip(errors, 1, None), bins=np.logspace(0, np.log10(MAX_ERROR_KM), 40),
            color="#3b75af")
    ax.set_xscale("log")
    for r in marks_km:
        ax.axvline(r, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("great-circle error (km, log scale)")
    ax.set_ylabel("test images")
    return figure_png(fig, REPORT_DPI)


def reliability_png(bins_before, bins_after, level: str) -> bytes:
    """Reliability diagrams before and after temperature scaling. Each bin row is
    ``(count, confidence sum, correct count)`` over equal-width confidence bins."""
    fig = new_figure((8, 3.6), layout="tight")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, bins, title in zip(axes, (bins_before, bins_after), ("before", "after")):
        b = np.asarray(bins, dtype=np.float64)
        n = len(b)
        centres = (np.arange(n) + 0.5) / n
        acc = np.divide(b[:, 2], b[:, 0], out=np.zeros(n), where=b[:, 0] > 0)
        ax.bar(centres, acc, width=1 / n, edgecolor="black", color="#6aa84f", label="accuracy")
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        ax.set_title(f"level {level}, {title} temperature scaling")
        ax.set_xlabel("confidence")
    axes[0].set_ylabel("accuracy")
    return figure_png(fig, REPORT_DPI)


def confusion_png(matrix, labels: Sequence[str], level: str) -> bytes:
    """The row-normalised confusion matrix (rows: true class), labelled when it is small."""
    m = np.asarray(matrix, dtype=np.float64)
    m = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    fig = new_figure((5, 4.5), layout="tight")
    ax = fig.subplots()
    ax.imshow(m, cmap="Blues", vmin=0, vmax=1)
    if len(labels) <= CONFUSION_MAX_TICKS:
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("predicted cell")
    ax.set_ylabel("true cell")
    ax.set_title(f"confusion (row-normalised), level {level}")
    return figure_png(fig, REPORT_DPI)


def gradcam_grid_png(overlays: Sequence, captions: Sequence[str], columns: int = 4) -> bytes:
    """Images (``(H, W, 3)`` floats in [0, 1], e.g. from ``heatmap_overlay``) in a grid of
    at most ``columns`` columns, each with its caption."""
    cols = min(columns, max(1, len(overlays)))
    rows = max(1, -(-len(overlays) // cols))
    fig = new_figure((3 * cols, 3.2 * rows), layout="tight")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, caption in zip(axes.flat, overlays, captions):
        ax.imshow(img)
        ax.set_title(caption, fontsize=8)
    return figure_png(fig, REPORT_DPI)


def embeddings_png(xy, groups: Sequence[int], names: Sequence[str] = (),
                   max_legend: int = 12) -> bytes:
    """A 2-D projection of embeddings (t-SNE / UMAP output), one colour per group; the legend
    names the groups (``names[group]``) when there are at most ``max_legend`` of them."""
    from matplotlib import colormaps

    xy = np.asarray(xy, dtype=np.float64)
    groups = np.asarray(groups)
    fig = new_figure((6.5, 5), layout="tight")
    ax = fig.subplots()
    unique = np.unique(groups)
    cmap = colormaps["tab20"]
    for i, g in enumerate(unique):
        sel = groups == g
        label = names[g] if 0 <= g < len(names) else str(g)
        ax.scatter(xy[sel, 0], xy[sel, 1], s=8, color=cmap(i % 20), label=f"{g}: {label}",
                   linewidths=0)
    if 0 < len(unique) <= max_legend:
        ax.legend(fontsize=7, markerscale=2, loc="best")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title("test image embeddings (t-SNE), coloured by true coarsest class")
    return figure_png(fig, REPORT_DPI)


def heatmap_overlay(rgb, heatmap, alpha: float = 0.45) -> np.ndarray:
    """``(H, W, 3)`` RGB in [0, 1] blended with an ``(H, W)`` map in [0, 1] coloured by the
    jet colour map: ``(H, W, 3)`` float RGB in [0, 1]."""
    from matplotlib import colormaps

    heat = colormaps["jet"](np.asarray(heatmap))[..., :3]
    return ((1 - alpha) * np.asarray(rgb) + alpha * heat).clip(0.0, 1.0)
