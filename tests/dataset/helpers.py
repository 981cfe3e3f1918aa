"""Inputs for the dataset tests: a demo-world manifest with stored images, real photo tables."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from geo_assets import layout
from geo_assets.demo.render import render_image
from geo_assets.demo.world import generate_world
from geo_assets.manifest import MANIFEST_SCHEMA
from geo_assets.storage import DataRoot

HEADINGS = (0, 90, 180, 270)


def _row(image_id, source, source_id, group_id, lat, lon, sha, kept, reason=None) -> dict:
    return {"image_id": image_id, "source": source, "source_id": source_id,
            "group_id": group_id, "lat_deg": float(lat), "lon_deg": float(lon),
            "cell_id": "", "sha256": sha, "kept": kept, "drop_reason": reason,
            "license": "CC BY-SA 4.0" if source == "mapillary" else "Google",
            "attribution": "demo"}


def demo_world_rows(root: DataRoot | None, seed: int = 0, size=(96, 72)) -> list[dict]:
    """The tiny demo world as manifest rows, its images stored in ``root`` (None: no images,
    a stand-in digest)."""
    world = generate_world(seed, preset="tiny")
    rows = []

    def store(item, heading=None) -> str:
        if root is None:
            return hashlib.sha256(f"{item}{heading}".encode()).hexdigest()
        return root.put_image(render_image(world, item, *size, heading=heading))[0]

    for im in world.images:
        if im.artefact == "corrupt":
            rows.append(_row(f"mapillary:{im.image_id}", "mapillary", im.image_id,
                             im.sequence_id, im.lat, im.lon, None, False, "corrupt"))
            continue
        sha = store(im)
        rows.append(_row(f"mapillary:{im.image_id}", "mapillary", im.image_id,
                         im.sequence_id, im.lat, im.lon, sha, True))
    for pano in world.panoramas:
        for h in HEADINGS:
            sha = store(pano, h)
            sid = f"{pano.pano_id}_{h}"
            rows.append(_row(f"streetview:{sid}", "streetview", sid, pano.pano_id,
                             pano.lat, pano.lon, sha, True))
    return rows


def write_manifest(root: DataRoot, rows: list[dict]) -> Path:
    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    with root.open_atomic(layout.IMAGE_MANIFEST) as f:
        pq.write_table(table, f)
    return root.local_path(layout.IMAGE_MANIFEST)


def croatia_table(folder: Path, limit: int | None = None) -> pl.DataFrame:
    """The real Croatia Street View photos: 200 places x 4 headings, one group per place."""
    labels = pl.read_csv(folder / "labels.csv")
    if limit:
        labels = labels.head(limit)
    paths = [str(folder / f) for f in labels["filename"]]
    shas = [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths]
    return labels.select(
        image_id=pl.lit("streetview:") + pl.col("filename").str.extract(r"images/(.*)\.jpg"),
        lat_deg="lat", lon_deg="lon").with_columns(
        source=pl.lit("streetview"),
        group_id=pl.col("image_id").str.extract(r"streetview:(.*)_\d+$"),
        sha256=pl.Series(shas), source_path=pl.Series(paths),
        license=pl.lit("Google (test use only)"), attribution=pl.lit("Google"))


def streetscapes_table(csv: Path) -> pl.DataFrame:
    """Global Streetscapes records: real coordinates with Mapillary/KartaView sequence ids."""
    gs = pl.read_csv(csv, infer_schema_length=0)
    return gs.select(image_id=pl.col("image_id"), source=pl.col("source").str.to_lowercase(),
                     group_id=pl.col("sequence_id"),
                     lat_deg=pl.col("latitude").cast(pl.Float64),
                     lon_deg=pl.col("longitude").cast(pl.Float64))


def with_fake_labels(table: pl.DataFrame, levels, split="train", fold=0) -> pl.DataFrame:
    """Shard-input columns for a table without a hierarchy (shard and loader tests)."""
    from geo_assets.hierarchy import image_cells

    cells = image_cells(table["lat_deg"].to_numpy(), table["lon_deg"].to_numpy(), levels)
    rng = np.random.default_rng(0)
    return table.with_columns(
        split=pl.lit(split), fold=pl.lit(fold),
        **{f"cell_{lv}": pl.Series(cells[lv], dtype=pl.String) for lv in levels},
        **{f"label_{lv}": pl.Series(rng.integers(0, 3, table.height)) for lv in levels})


def mp16_authors_table(csv: Path, seed: int = 0, travel: float = 0.03) -> pl.DataFrame:
    """The real MP-16 (Flickr) photo locations with a synthetic author column of realistic
    skew: authors own runs of spatially neighbouring photos with Zipf-distributed sizes (the
    largest holds about 1% of the photos, most hold a handful), and ``travel`` of the photos
    belong to an author from elsewhere."""
    from geo_assets.cells import points_to_rowcol

    coords = pl.read_csv(csv)
    lat, lon = coords["LAT"].to_numpy(), coords["LON"].to_numpy()
    rng = np.random.default_rng(seed)
    rows, cols = points_to_rowcol(lat, lon, 12)
    order = np.lexsort((rng.random(len(lat)), cols, rows))
    sizes = np.minimum(rng.zipf(1.7, len(lat)), len(lat) // 100)
    run_author = np.repeat(np.arange(len(sizes)), sizes)[:len(lat)]
    author = np.empty(len(lat), np.int64)
    author[order] = run_author
    travellers = rng.random(len(lat)) < travel
    author[travellers] = rng.choice(author, travellers.sum())
    return pl.DataFrame({
        "image_id": [f"local:mp16_{i:06d}" for i in range(len(lat))],
        "source": "local", "group_id": [f"author{a}" for a in author],
        "lat_deg": lat, "lon_deg": lon})
