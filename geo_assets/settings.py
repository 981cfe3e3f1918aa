"""The library's settings schemas: one frozen dataclass per settings group, with each field's
default and description written here once.

The library modules take these objects as arguments; the Dagster resources
(``pipeline/resources.py``) build their fields from them (``pipeline/schema.py``), so a
default changed here changes the resource, the launchpad's documentation and the settings
file together. Training's schema is ``training.config.TrainConfig``.

This module imports nothing heavy: loading the Dagster definitions imports it.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

from geo_assets.cells import MAX_LEVEL
from geo_assets.errors import InputError


def doc(description: str) -> dict[str, str]:
    """A dataclass field's metadata: its description, shown by the resources and the CLI."""
    return {"description": description}


# --- images and filters --------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageSettings:
    min_width: int = field(
        default=64, metadata=doc("Images narrower than this are dropped (too_small)."))
    min_height: int = field(
        default=64, metadata=doc("Images lower than this are dropped (too_small)."))
    max_pixels: int = field(
        default=50_000_000, metadata=doc("Decompression-bomb limit: width x height at most."))
    analysis_px: int = field(
        default=64, metadata=doc("Decode JPEGs scaled down towards this short side for the "
            "brightness and pHash checks."))
    formats: tuple[str, ...] = field(
        default=("JPEG", "PNG", "WEBP"), metadata=doc("Image formats accepted."))
    max_frames: int = field(
        default=64, metadata=doc("Animated images with more frames are refused; otherwise "
            "the first frame is used."))

    def __post_init__(self) -> None:
        for name in ("min_width", "min_height", "max_pixels", "analysis_px", "max_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"ImageSettings.{name} must be at least 1, got "
                                 f"{getattr(self, name)}")


@dataclass(frozen=True)
class FilterSettings:
    min_brightness: float = field(
        default=40.0, metadata=doc("Mean grey (0-255) below which an image is too dark."))
    max_brightness: float = field(
        default=235.0, metadata=doc("Mean grey above which an image is over-exposed."))
    min_distance_m: float = field(
        default=10.0, metadata=doc("Spatial dedup radius in metres within a cell (0 disables)."))
    max_per_sequence: int = field(
        default=20, metadata=doc("At most this many images per Mapillary sequence or Street View "
            "panorama per cell (0: no cap)."))
    max_per_local_group: int = field(
        default=0, metadata=doc("At most this many photos per local photo group per cell (0: no "
            "cap). Off by default: a local group is often an author, not a sequence, and "
            "capping it drops a prolific author's photos."))
    phash_max_distance: int = field(
        default=4, metadata=doc("pHash Hamming distance that counts as a near duplicate "
            "(negative: off)."))

    def group_cap(self, source: str) -> int:
        """The per-cell cap of one capture group of ``source``."""
        return self.max_per_local_group if source == "local" else self.max_per_sequence

    def __post_init__(self) -> None:
        if not 0 <= self.min_brightness < self.max_brightness <= 255:
            raise ValueError(f"filter brightness bounds must satisfy 0 <= min_brightness < "
                             f"max_brightness <= 255, got min_brightness "
                             f"{self.min_brightness}, max_brightness {self.max_brightness}")
        if self.min_distance_m < 0:
            raise ValueError(f"filter min_distance_m must be >= 0 (0: off), got "
                             f"{self.min_distance_m}")
        for name in ("max_per_sequence", "max_per_local_group"):
            if getattr(self, name) < 0:
                raise ValueError(f"filter {name} must be >= 0 (0: no cap), got "
                                 f"{getattr(self, name)}")
        if self.phash_max_distance > 64:
            raise ValueError(f"filter phash_max_distance must be at most 64 bits (negative: "
                             f"off), got {self.phash_max_distance}")


@dataclass(frozen=True)
class IngestSettings:
    target_per_cell: int = field(
        default=200, metadata=doc("Candidate images listed per cell and source (before filters)."))
    seed: int = field(default=0, metadata=doc("Seed of the per-cell sampling."))
    workers: int = field(
        default=8, metadata=doc("Threads that decode, check, hash and store downloaded images "
            "(CPU work, off the request path)."))
    fetch_threads: int = field(
        default=64, metadata=doc("Threads that download images (network waits; bounded by "
            "max_in_flight and the HTTP rate limit)."))
    max_in_flight: int = field(
        default=64, metadata=doc("Downloads submitted but not finished, at most."))
    max_fetch_failure_ratio: float = field(
        default=0.5, metadata=doc("Above this share of failed downloads the cell fails (and is "
            "retried later)."))
    refetch_corrupt: bool = field(
        default=True, metadata=doc("Download a corrupt image once more before dropping it."))
    force: bool = field(default=False, metadata=doc("Re-crawl a cell that is already done."))
    retry_rounds: int = field(
        default=3, metadata=doc("Later crawls that re-open a done cell to fetch its retryable "
            "drops again (failed, truncated or non-image downloads); 0: never."))
    images: ImageSettings = field(default_factory=ImageSettings, metadata=doc("Image checks."))
    filters: FilterSettings = field(default_factory=FilterSettings, metadata=doc("Filters."))
    source_filters: tuple[tuple[str, FilterSettings], ...] = field(
        default=(), metadata=doc("Filters of one source instead of ``filters``, as (source, "
            "settings) pairs, e.g. a lower brightness floor for a local archive."))

    def filters_for(self, source: str) -> FilterSettings:
        """The filter settings of ``source``."""
        return dict(self.source_filters).get(str(source), self.filters)

    def __post_init__(self) -> None:
        # target_per_cell 0 is a crawl plan's budget for a cell without coverage; the user's
        # images_per_cell must be at least 1 (checked by the settings resource)
        if self.target_per_cell < 0:
            raise ValueError("IngestSettings.target_per_cell (a cell's image budget) must not "
                             f"be negative, got {self.target_per_cell}")
        for name in ("workers", "max_in_flight"):
            if getattr(self, name) < 1:
                raise ValueError(f"IngestSettings.{name} must be at least 1, got "
                                 f"{getattr(self, name)}")
        if not 0.0 <= self.max_fetch_failure_ratio <= 1.0:
            raise ValueError("IngestSettings.max_fetch_failure_ratio must lie in 0..1, got "
                             f"{self.max_fetch_failure_ratio}")


# --- crawl plan ----------------------------------------------------------------------------------

PLAN_POLICIES = ("uniform", "coverage", "weight")


@dataclass(frozen=True)
class PlanSettings:
    policy: str = field(
        default="coverage", metadata=doc("How the total target is shared among the plan's "
            "cells: uniform, coverage (proportional to estimated coverage, capped at "
            "max_images_per_cell) or weight (proportional to the weights file's column)."))
    total_images: int = field(
        default=0, metadata=doc("Images to list over the whole region (0: no plan budget; "
            "every cell gets images_per_cell)."))
    split_threshold: float = field(
        default=500.0, metadata=doc("A crawl cell whose estimated coverage exceeds this splits "
            "into its four children (recursively); nothing merges below the crawl level."))
    max_split_levels: int = field(
        default=3, metadata=doc("Levels below the crawl level a cell may split into at most."))
    max_images_per_cell: int = field(
        default=2000, metadata=doc("Budget cap per plan cell (coverage and weight policies); "
            "what a capped cell cannot take goes to the others."))
    coverage_zoom: int = field(
        default=5, metadata=doc("Zoom of the Mapillary coverage tiles read for the plan (low: "
            "few requests; zoom <= 5 counts sequences, 6-13 sequence lines, 14 images)."))
    streetview_samples_per_cell: int = field(
        default=16, metadata=doc("Street View metadata lookups per crawl cell when the plan "
            "estimates coverage from Street View (free requests)."))
    weights_file: str | None = field(
        default=None, metadata=doc("CSV or Parquet with lat_deg, lon_deg and the weight column "
            "(e.g. population of places), summed per cell (weight policy)."))
    weight_column: str = field(
        default="weight", metadata=doc("Column of weights_file that the weight policy uses."))
    streetview_usd_per_1000: float = field(
        default=7.0, metadata=doc("Street View Static API price per 1000 images in USD, for "
            "the dry run's cost (metadata lookups are free)."))

    def __post_init__(self) -> None:
        if self.policy not in PLAN_POLICIES:
            raise InputError(f"plan policy {self.policy!r} is unknown: use one of "
                             f"{', '.join(PLAN_POLICIES)}")
        if self.total_images < 0 or self.max_images_per_cell < 1:
            raise InputError("plan total_images must be >= 0 and max_images_per_cell >= 1")
        if self.split_threshold <= 0 or self.max_split_levels < 0:
            raise InputError("plan split_threshold must be > 0 and max_split_levels >= 0")
        if self.policy == "weight" and not self.weights_file:
            raise InputError("plan policy 'weight' needs weights_file (CSV or Parquet with "
                             "lat_deg, lon_deg and the weight column)")


@dataclass(frozen=True)
class RecoverySettings:
    max_age_days: float = field(
        default=0.0, metadata=doc("Re-crawl a done cell once its crawl is older than this many "
            "days, keeping the images stored before (0: never)."))
    retry_base_s: float = field(
        default=600.0, metadata=doc("First wait before the sensor retries a failed cell "
            "(doubles per failure)."))
    retry_max_s: float = field(
        default=86_400.0, metadata=doc("Longest wait between retries of a failed cell."))
    quota_retry_s: float = field(
        default=3600.0, metadata=doc("Wait after a cell failed on an exhausted quota before its "
            "first retry (doubles per failure, up to retry_max_s)."))


@dataclass(frozen=True)
class RequestBudgetSettings:
    """Request budgets per endpoint class (0: unlimited). Defaults follow Mapillary's
    published limits (search 10,000 and entity 60,000 requests a minute, vector tiles 50,000
    a day); set Street View's from your Google Cloud quotas."""

    search_per_min: int = field(default=10_000, metadata=doc("Search requests a minute "
        "(Mapillary bbox searches, Street View metadata lookups)."))
    search_per_day: int = field(default=0, metadata=doc("Search requests a day."))
    entity_per_min: int = field(default=60_000, metadata=doc("Entity requests a minute "
        "(Mapillary GET /{image_id})."))
    entity_per_day: int = field(default=0, metadata=doc("Entity requests a day."))
    tiles_per_min: int = field(default=0, metadata=doc("Coverage tile requests a minute."))
    tiles_per_day: int = field(default=50_000, metadata=doc("Coverage tile requests a day."))
    cdn_per_min: int = field(default=0, metadata=doc("Image downloads a minute (Mapillary "
        "thumbnails, Street View images)."))
    cdn_per_day: int = field(default=0, metadata=doc("Image downloads a day."))


# --- HTTP and API clients ------------------------------------------------------------------------

@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = field(default=6, metadata=doc("Retries of a failed request."))
    backoff_base_s: float = field(
        default=0.5, metadata=doc("First backoff step in seconds (doubles per retry)."))
    backoff_max_s: float = field(default=30.0, metadata=doc("Longest backoff step in seconds."))
    max_retry_after_s: float = field(
        default=120.0, metadata=doc("A longer Retry-After means: give up now, retry the cell "
            "later."))

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        """Full-jitter exponential backoff, never shorter than the server's Retry-After."""
        backoff = rng.uniform(0, min(self.backoff_max_s, self.backoff_base_s * 2**attempt))
        return max(backoff, retry_after or 0.0)


@dataclass(frozen=True)
class HttpSettings:
    connect_timeout_s: float = field(
        default=5.0, metadata=doc("Connect timeout per request, seconds."))
    read_timeout_s: float = field(default=30.0, metadata=doc("Read timeout per request, seconds."))
    requests_per_s: float = field(
        default=50.0, metadata=doc("Request rate limit per run (0: unlimited)."))
    burst: int = field(default=10, metadata=doc("Requests allowed at once above the rate."))
    pool_size: int = field(default=32, metadata=doc("Connections kept open per host."))
    retry: RetryPolicy = field(default_factory=RetryPolicy, metadata=doc("Retries and backoff."))
    deadline_s: float = field(
        default=60.0, metadata=doc("Overall time one attempt may take (connect, headers and "
            "the whole body), seconds: a server dripping bytes cannot hold a worker longer."))
    total_deadline_s: float = field(
        default=300.0, metadata=doc("Overall time a request may take over all its retries, "
            "seconds."))
    max_body_bytes: int = field(
        default=64 * 1024 * 1024, metadata=doc("Largest response body read (streamed); a "
            "larger one is refused, never buffered."))
    max_redirects: int = field(
        default=5, metadata=doc("Redirects followed at most, each only to an allowed host."))
    extra_hosts: tuple[str, ...] = field(
        default=(), metadata=doc("Host names (fnmatch patterns such as *.example.org) allowed "
            "in addition to the client's own API and media hosts."))

    def __post_init__(self) -> None:
        for name in ("deadline_s", "total_deadline_s", "max_body_bytes"):
            if not getattr(self, name) > 0:
                raise ValueError(f"HttpSettings.{name} must be positive, got {getattr(self, name)}")
        if self.max_redirects < 0:
            raise ValueError(f"HttpSettings.max_redirects must be >= 0, got {self.max_redirects}")


@dataclass(frozen=True)
class MapillarySettings:
    thumb_resolution: int = field(
        default=1024, metadata=doc("Thumbnail resolution: 256, 1024 or 2048 pixels (-1: the "
            "original)."))
    box_deg: float = field(
        default=0.0099, metadata=doc("Search box side in degrees (the API allows < 0.01)."))
    coverage_zoom: int | None = field(
        default=None, metadata=doc("Coverage tile zoom (unset: from the cell size)."))
    strata: int = field(default=4, metadata=doc("Strata per cell side for spreading the sample."))
    max_search_requests: int = field(
        default=400, metadata=doc("Bbox search requests per cell at most."))
    max_split_depth: int = field(
        default=5, metadata=doc("How often a search box at the 2000-result cap splits."))
    use_coverage_tiles: bool = field(
        default=True, metadata=doc("Find imagery through the coverage tiles first."))
    list_workers: int = field(default=8, metadata=doc("Concurrent tile and search requests."))
    http: HttpSettings = field(default_factory=HttpSettings, metadata=doc("HTTP behaviour."))

    def thumb_field(self) -> str:
        return "thumb_original_url" if self.thumb_resolution < 0 else \
            f"thumb_{self.thumb_resolution}_url"


@dataclass(frozen=True)
class StreetViewSettings:
    headings: tuple[float, ...] = field(
        default=(0.0, 90.0, 180.0, 270.0), metadata=doc("Headings of the images taken at each "
            "pano, degrees."))
    size: tuple[int, int] = field(
        default=(640, 640), metadata=doc("Image width and height (at most 640x640)."))
    fov: float = field(default=90.0, metadata=doc("Field of view, degrees (1..120)."))
    pitch: float = field(default=0.0, metadata=doc("Camera pitch, degrees."))
    radius_m: int = field(default=50, metadata=doc("Metadata lookup radius in metres."))
    source: str = field(default="outdoor", metadata=doc("Street View source: outdoor or default."))
    max_lookups: int = field(
        default=400, metadata=doc("Metadata requests per cell at most (half for discovery)."))
    ring_m: float = field(
        default=60.0, metadata=doc("Distance of the follow-up lookups around a found pano."))
    ring_points: int = field(default=6, metadata=doc("Follow-up lookups around each found pano."))
    lookup_workers: int = field(default=8, metadata=doc("Concurrent metadata lookups."))
    http: HttpSettings = field(default_factory=HttpSettings, metadata=doc("HTTP behaviour."))

    def __post_init__(self) -> None:
        w, h = self.size
        if not (0 < w <= 640 and 0 < h <= 640):
            raise InputError(f"Street View image size {w}x{h} is too large: at most 640x640")
        if not 0 < self.fov <= 120:
            raise InputError(f"Street View fov {self.fov} is out of range: use 1..120")


# --- dataset: splits, hierarchy, shards ----------------------------------------------------------

@dataclass(frozen=True)
class SplitSettings:
    k_folds: int = field(default=5, metadata=doc("Cross-validation folds of the train split."))
    test_fraction: float = field(default=0.1, metadata=doc("Share of images held out as test."))
    min_distance_km: float = field(
        default=1.0, metadata=doc("Images closer than this never sit in different splits."))
    seed: int = field(
        default=0, metadata=doc("Seed of the split assignment and of the shard order."))
    stratify_level: int = field(
        default=1, metadata=doc("Level whose cells stratify the splits (the coarsest hierarchy "
            "level)."))
    block_km: float = field(
        default=10.0, metadata=doc("Smallest spatial block (quadtree cell height, km) assigned to "
            "one split whole; dense places split down to it, sparse places stay in coarser "
            "blocks. Larger: fewer images dropped at block edges, coarser proportions."))
    size_tolerance: float = field(
        default=0.2, metadata=doc("Relative tolerance of each split's share of images and of "
            "capture groups (test: test_fraction; each fold: an equal share of the rest); "
            "outside it the splits asset warns."))

    def __post_init__(self) -> None:
        if self.k_folds < 2:
            raise InputError(f"k_folds {self.k_folds} must be at least 2")
        if not 0 < self.test_fraction < 1:
            raise InputError(f"test_fraction {self.test_fraction} must be between 0 and 1")
        if self.min_distance_km < 0:
            raise InputError(f"min_distance_km {self.min_distance_km} must not be negative")
        if self.block_km <= 0:
            raise InputError(f"block_km {self.block_km} must be positive")
        if not 0 < self.size_tolerance < 1:
            raise InputError(f"size_tolerance {self.size_tolerance} must be between 0 and 1")


@dataclass(frozen=True)
class HierarchySettings:
    levels: tuple[int, ...] = field(
        default=(1, 3, 5, 8), metadata=doc("Hierarchy levels (quadtree depths), coarsest first."))
    min_images: int = field(
        default=20, metadata=doc("Training images a class needs at least; sparser cells merge "
            "into their parent's class."))
    max_images: int | None = field(
        default=None, metadata=doc("Adaptive mode: split a cell only while it holds more training "
            "images than this (unset: fixed levels)."))

    def __post_init__(self) -> None:
        levels = tuple(self.levels)
        if not levels:
            raise InputError("hierarchy levels are empty: give at least one level, e.g. [1, 3]")
        if any(not isinstance(v, int) or not 1 <= v <= MAX_LEVEL for v in levels):
            raise InputError(f"hierarchy levels {list(levels)} must be integers 1..{MAX_LEVEL}")
        if any(b <= a for a, b in itertools.pairwise(levels)):
            raise InputError(f"hierarchy levels {list(levels)} must be strictly increasing "
                             "(coarsest first), e.g. [1, 3, 5, 8]")
        if self.min_images < 1:
            raise InputError(f"hierarchy min_images {self.min_images} must be at least 1")
        if self.max_images is not None and self.max_images < self.min_images:
            raise InputError(f"hierarchy max_images {self.max_images} must be at least "
                             f"min_images {self.min_images}")


@dataclass(frozen=True)
class ShardSettings:
    image_size: int = field(default=256, metadata=doc("Shorter side of shard images, pixels."))
    jpeg_quality: int = field(default=90, metadata=doc("JPEG quality of shard images."))
    shard_size: int = field(default=1000, metadata=doc("Samples per shard at most."))
    seed: int = field(default=0, metadata=doc("Seed of the sample order within a build."))
    workers: int = field(
        default=2, metadata=doc("Processes resizing images for the shards (1: in this process)."))
    chunk_size: int = field(default=32, metadata=doc("Images per resize task."))
    threads: int = field(
        default=8, metadata=doc("Threads per resize process (overlap reads and PIL, which "
            "releases the GIL while it decodes and encodes)."))

    def __post_init__(self) -> None:
        if not 16 <= self.image_size <= 4096:
            raise InputError(f"image_size {self.image_size} out of range: use 16..4096 px")
        if not 1 <= self.jpeg_quality <= 100:
            raise InputError(f"jpeg_quality {self.jpeg_quality} out of range: use 1..100")
        if self.shard_size < 1:
            raise InputError(f"shard_size {self.shard_size} must be at least 1")
        if self.workers < 1:
            raise InputError(f"shard workers {self.workers} must be at least 1")
