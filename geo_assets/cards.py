"""The dataset card: a Markdown README (Hugging Face dataset-card style) written beside the
shards, so that whoever receives the dataset folder learns what is in it, where the images
came from, under which licences, whom to credit, and how it is skewed.

``datasets/README.md`` (the card) and ``datasets/attribution.csv`` (every source, licence and
attribution with its image count: Mapillary's CC BY-SA 4.0 asks that every creator be
credited, and the card lists only the largest). The model card is training's (model_card.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from geo_assets import layout
from geo_assets.plots import markdown_table
from geo_assets.storage import atomic_path

ATTRIBUTION_SHOWN = 25  # attributions listed in the card itself
TOP_SHARE = 0.1  # coverage skew: the share of images held by the top 10% of cells
SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                   (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"))


def attribution_table(images: pl.DataFrame) -> pl.DataFrame:
    """``source``, ``license``, ``attribution``, ``images``: every credit line once, the
    largest first (missing licence or attribution read "unknown")."""
    return (images.select(pl.col("source"),
                          pl.col("license").fill_null("unknown"),
                          pl.col("attribution").fill_null("unknown"))
            .group_by("source", "license", "attribution").agg(images=pl.len())
            .sort(["images", "source", "attribution"], descending=[True, False, False]))


def coverage_skew(cell_ids) -> dict:
    """How unevenly images fill their cells: cells, the share of images in the top
    ``TOP_SHARE`` of cells, and the largest cell's share."""
    counts = np.sort(pl.Series(cell_ids, dtype=pl.String).value_counts()["count"].to_numpy())
    if not len(counts):
        return {"cells": 0, "top_cells_share": 0.0, "largest_cell_share": 0.0}
    top = max(1, round(len(counts) * TOP_SHARE))
    total = counts.sum()
    return {"cells": len(counts), "top_cells": top,
            "top_cells_share": round(float(counts[-top:].sum() / total), 3),
            "largest_cell_share": round(float(counts[-1] / total), 3)}


def country_shares(cell_ids, top: int = 5) -> list[tuple[str, float]]:
    """The ``top`` countries by share of images, each image counted for the country that
    covers most of its cell (Natural Earth 1:110m; cells at sea read "sea or no country")."""
    from geo_assets.cell_places import cell_places

    counts = pl.Series("cell_id", cell_ids, dtype=pl.String).value_counts()
    if not counts.height:
        return []
    places = cell_places(counts["cell_id"].to_list())
    shares = (counts.with_columns(country=pl.col("cell_id").replace_strict(
        {c: p.split(",")[0].split(" and ")[0] for c, p in places.items()}))
        .group_by("country").agg(pl.col("count").sum())
        .sort(["count", "country"], descending=[True, False]).head(top))
    total = counts["count"].sum()
    return [(c, round(n / total, 3)) for c, n in shares.iter_rows()]


def _size_category(n: int) -> str:
    return next((label for limit, label in SIZE_CATEGORIES if n < limit), "n>10M")


def _front_matter(n: int, licences: list[str]) -> str:
    lic = "\n".join(f"  - {x}" for x in licences) or "  - unknown"
    return ("---\npretty_name: geoscout image-geolocation dataset\nlicense: other\n"
            f"license_details:\n{lic}\ntask_categories:\n  - image-classification\n"
            "tags:\n  - geolocation\n  - webdataset\n  - geoscout\n"
            f"size_categories:\n  - {_size_category(n)}\n---\n")


def _splits_section(splits: pl.DataFrame) -> list[str]:
    counts = splits.group_by("split", "fold").agg(images=pl.len()).sort("split", "fold")
    rows = [(s, "test" if f < 0 else f, n) for s, f, n in counts.iter_rows()]
    return ["## Splits", "",
            ("The test split is held out; train is cut into folds (training validates on one). "
            "No capture group, and no two images closer than the split distance, cross a split."),
            "", markdown_table(["split", "fold", "images"], rows, align="llr"), ""]


def _bias_section(images: pl.DataFrame, skew: dict) -> list[str]:
    sources = images.group_by("source").agg(n=pl.len()).sort("n", descending=True)
    mix = ", ".join(f"{s} {n / images.height:.0%}" for s, n in sources.iter_rows())
    return ["## Known biases and limitations", "",
            (f"- Coverage skew: the top {skew.get('top_cells', 0)} of {skew['cells']} occupied "
            f"cells ({TOP_SHARE:.0%}) hold {skew['top_cells_share']:.0%} of the images; the "
            f"largest cell alone holds {skew['largest_cell_share']:.0%}. Street-level imagery "
            "follows roads and cities: rural areas, deserts and most of Africa and Asia are "
            "thin or missing, and a model trained here inherits that."),
            f"- Source mix: {mix}. Each source has its own cameras, seasons and processing.",
            "- Countries (each image counted for its cell's largest country): "
            + ", ".join(f"{c} {share:.0%}" for c, share in country_shares(images["cell_id"]))
            + ".",
            ("- Capture groups (sequences, panoramas, photo sets) hold many near-identical "
            "images; splits keep each group on one side, so test scores are not inflated."),
            ("- Land and country borders are Natural Earth at coarse scale: very small islands "
            "may have no land cell."), ""]


def _cell(value) -> str:
    """A value safe inside a Markdown table cell (credit lines are free text)."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def _attribution_section(credits: pl.DataFrame) -> list[str]:
    rows = [tuple(_cell(v) for v in r) for r in credits.head(ATTRIBUTION_SHOWN).iter_rows()]
    more = credits.height - ATTRIBUTION_SHOWN
    return ["## Attribution", "",
            "Images under CC BY-SA (Mapillary) must credit their creators. The full list of "
            f"{credits.height} credit lines is in `{layout.ATTRIBUTION}`"
            + (f"; the largest {ATTRIBUTION_SHOWN} are below." if more > 0 else ":"), "",
            markdown_table(["source", "licence", "attribution", "images"], rows, align="lllr"),
            ""]


def dataset_card(images: pl.DataFrame, splits: pl.DataFrame, descriptor: dict,
                 index: dict) -> str:
    """The card's Markdown. ``images``: the dataset's images (``source``, ``license``,
    ``attribution``, ``cell_id``: e.g. each image's finest cell); ``splits``: ``split`` and
    ``fold`` per image; ``descriptor``: ``dataset.json``; ``index``: the shard index."""
    credits = attribution_table(images)
    licences = sorted(set(credits["license"].to_list()))
    by_source = (credits.group_by("source", "license").agg(images=pl.col("images").sum())
                 .sort("images", descending=True))
    levels = descriptor["levels"]
    classes = [(lv, descriptor["num_classes"][str(lv)]) for lv in levels]
    lines = [_front_matter(images.height, licences),
             "# geoscout image-geolocation dataset", "",
             (f"{index['total_count']} images in {len(index['shards'])} "
             f"WebDataset shards (`{layout.SHARDS_DIR}/`), each labelled with its latitude and "
             f"longitude and its class at {len(levels)} levels of a quadtree over the Earth."),
             "", "## Sources and licences", "",
             markdown_table(["source", "licence", "images"], by_source.iter_rows(),
                            align="llr"), "",
             *_attribution_section(credits), *_splits_section(splits),
             "## Structure", "",
             (f"A sample: `jpg` (shorter side {descriptor['image_size']} px) and `json` "
             "(`image_id`, `lat_deg`, `lon_deg`, `source`, `group_id`, `license`, "
             "`attribution`, `split`, `fold`, `cells`, `labels`). Classes per level:"), "",
             markdown_table(["level", "classes"], classes, align="rr"), "",
             *_bias_section(images, coverage_skew(images["cell_id"])),
             "## How it was built", "",
             f"- Manifest SHA-256: `{descriptor['manifest_hash']}`",
             f"- Split settings: `{descriptor['splits']}`",
             f"- Hierarchy settings: `{descriptor['hierarchy']}`",
             f"- Created: {descriptor['created_at']}", ""]
    return "\n".join(lines)


def write_dataset_card(datasets_dir: Path, images: pl.DataFrame, splits: pl.DataFrame,
                       descriptor: dict, index: dict) -> dict:
    """Write the card and the attribution list beside the shards; their paths and figures."""
    card = dataset_card(images, splits, descriptor, index)
    credits = attribution_table(images)
    with atomic_path(datasets_dir / layout.ATTRIBUTION) as tmp:
        credits.write_csv(tmp)
    with atomic_path(datasets_dir / layout.DATASET_CARD) as tmp:
        tmp.write_text(card, encoding="utf-8")
    return {"card": datasets_dir / layout.DATASET_CARD,
            "attribution": datasets_dir / layout.ATTRIBUTION,
            "credit_lines": credits.height, "skew": coverage_skew(images["cell_id"])}
