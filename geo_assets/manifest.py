"""The image manifest: one Parquet schema for every image geoscout has seen.

Every row says where an image came from and whether it was kept; a dropped image keeps its
row with the reason. The schema is defined here once and versioned; the README documents it.
Bump ``SCHEMA_VERSION`` on any change to the columns. The manifest holds no wall-clock
column, so an interrupted and resumed crawl writes the same bytes as an uninterrupted one;
fetch timings live in the per-cell ``.stats.json``.
"""

from __future__ import annotations

from enum import StrEnum

import pyarrow as pa

SCHEMA_VERSION = 1


class Source(StrEnum):
    MAPILLARY = "mapillary"
    STREETVIEW = "streetview"
    LOCAL = "local"


class DropReason(StrEnum):
    FETCH_FAILED = "fetch_failed"          # download failed after every retry
    NOT_AN_IMAGE = "not_an_image"          # body did not decode as an image
    CORRUPT = "corrupt"                    # truncated or damaged image data
    DECOMPRESSION_BOMB = "decompression_bomb"
    TOO_SMALL = "too_small"                # under the minimum width/height
    TOO_DARK = "too_dark"                  # mean luminance under the lower bound
    TOO_BRIGHT = "too_bright"              # mean luminance over the upper bound (over-exposed)
    OUT_OF_CELL = "out_of_cell"            # coordinates outside the crawl cell
    NO_LOCATION = "no_location"            # no usable coordinates
    DUPLICATE_LOCATION = "duplicate_location"  # closer than the dedup distance to a kept image
    SEQUENCE_CAP = "sequence_cap"          # more than k images of one capture sequence
    NEAR_DUPLICATE = "near_duplicate"      # perceptual hash too close to a kept image
    DUPLICATE_CONTENT = "duplicate_content"  # same bytes (SHA-256) as a kept image
    INVALID_RECORD = "invalid_record"      # the source's record failed strict parsing
    OUTSIDE_FOLDER = "outside_folder"      # a local path escapes its folder (.., absolute, link)
    FILE_MISSING = "file_missing"          # a local path names no readable file
    OUTSIDE_REGION = "outside_region"      # a local photo in no crawl cell of the region's grid
    OUTSIDE_CRAWL_CELLS = "outside_crawl_cells"  # a local photo whose cell is not crawled (yet)


# Outcomes that may pass on another try (a body cut short or swapped by the network, a
# failed download): never carried into a later crawl, which fetches them again.
RETRYABLE_REASONS = frozenset({DropReason.FETCH_FAILED.value, DropReason.CORRUPT.value,
                               DropReason.NOT_AN_IMAGE.value})


MANIFEST_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string(), nullable=False),      # "<source>:<source_id>"
        pa.field("source", pa.string(), nullable=False),        # Source
        pa.field("source_id", pa.string(), nullable=False),     # id at the provider
        pa.field("group_id", pa.string()),                      # sequence / pano / photo group
        pa.field("creator", pa.string()),
        pa.field("lat_deg", pa.float64(), nullable=False),
        pa.field("lon_deg", pa.float64(), nullable=False),
        pa.field("captured_at", pa.timestamp("ms", tz="UTC")),
        pa.field("heading_deg", pa.float32()),
        pa.field("is_pano", pa.bool_()),
        pa.field("cell_id", pa.string(), nullable=False),       # crawl cell
        pa.field("sha256", pa.string()),                        # null when never stored
        pa.field("file_bytes", pa.int64()),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("brightness", pa.float32()),                   # mean luminance, 0..255
        pa.field("phash", pa.string()),                         # 64-bit perceptual hash, hex
        pa.field("kept", pa.bool_(), nullable=False),
        pa.field("drop_reason", pa.string()),                   # DropReason, null when kept
        pa.field("error", pa.string()),                         # detail, never secrets
        pa.field("license", pa.string()),
        pa.field("attribution", pa.string()),
    ],
    metadata={b"geoscout_schema": b"image_manifest", b"geoscout_schema_version": b"1"},
)

COLUMNS = MANIFEST_SCHEMA.names

# What each column holds, for people (the Dagster UI's column schema, the README's table).
COLUMN_DOCS = {
    "image_id": "unique id, '<source>:<source_id>'",
    "source": "mapillary, streetview or local",
    "source_id": "the image's id at its provider",
    "group_id": "capture group: Mapillary sequence, Street View panorama, local photo group",
    "creator": "who took the image, when the provider says",
    "lat_deg": "latitude, degrees (WGS84)",
    "lon_deg": "longitude, degrees (WGS84)",
    "captured_at": "capture time (UTC)",
    "heading_deg": "camera heading, degrees clockwise from north",
    "is_pano": "a 360-degree panorama",
    "cell_id": "crawl cell (quadtree digits) the image was fetched for",
    "sha256": "SHA-256 of the stored file; null when never stored",
    "file_bytes": "stored file size",
    "width": "image width, pixels",
    "height": "image height, pixels",
    "brightness": "mean luminance, 0..255",
    "phash": "64-bit perceptual hash, hex",
    "kept": "kept for datasets (false: see drop_reason)",
    "drop_reason": "why it was dropped (DropReason); null when kept",
    "error": "detail of a failure (never a secret)",
    "license": "licence of the image",
    "attribution": "credit line the licence asks for",
}


# --- I/O ---------------------------------------------------------------------------------

CELL_VERSIONS_SCHEMA = pa.schema([
    pa.field("cell_id", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("version", pa.string(), nullable=False),   # sha256 of the cell manifest file
    pa.field("n_rows", pa.int64(), nullable=False),
    pa.field("n_kept", pa.int64(), nullable=False),
])


def rows_to_table(rows: list[dict]) -> pa.Table:
    """Rows (dicts keyed by column; ``captured_at`` as epoch ms) -> a MANIFEST_SCHEMA table,
    sorted by image id so equal inputs give equal bytes."""
    rows = sorted(rows, key=lambda r: r["image_id"])
    columns = {name: [r.get(name) for r in rows] for name in COLUMNS}
    return pa.Table.from_pydict(columns, schema=MANIFEST_SCHEMA)


def table_to_parquet_bytes(table: pa.Table, schema: pa.Schema = MANIFEST_SCHEMA) -> bytes:
    """Deterministic Parquet bytes (fixed compression, one row group, no wall clock)."""
    import io

    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table.cast(schema), buf, compression="zstd", row_group_size=max(1, 1 << 20),
                   write_statistics=True)
    return buf.getvalue()


def empty_manifest() -> pa.Table:
    return MANIFEST_SCHEMA.empty_table()
