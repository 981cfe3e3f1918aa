"""Resources: settings and API clients, configured per deployment in one place.

Secrets come only through ``dg.EnvVar`` and are read at launch, never at import.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
from pydantic import Field, create_model, field_validator

from geo_assets.settings import (
    HierarchySettings,
    HttpSettings,
    IngestSettings,
    MapillarySettings,
    PlanSettings,
    RecoverySettings,
    RequestBudgetSettings,
    ShardSettings,
    SplitSettings,
    StreetViewSettings,
)
from geo_assets.storage import PROJECT_ROOT, DataRoot, default_data_root
from pipeline.constants import CELLS_PER_RUN
from pipeline.ingest_checks import IngestChecks
from pipeline.schema import library_field, schema_fields, to_library

STREETVIEW_SIZE = StreetViewSettings().size


class GeoscoutSettings(IngestChecks):
    """Deployment-wide settings: where data lives, which region, which grid, and how images
    are checked and filtered."""

    data_root: str = Field(
        default_factory=default_data_root,
        description="Folder or fsspec URL (s3://bucket/prefix) that holds every output.",
    )
    # --- grid (issue: foundation) ---
    natural_earth_dir: str | None = Field(
        default=None,
        description="Folder with Natural Earth files as published (ne_50m_land.geojson/.shp/"
        ".zip, ne_50m_admin_0_countries.*), or 'embedded' (1:110m data shipped with pyogrio) "
        "or 'download' (fetched once into land/ under the data root, SHA-256 recorded). "
        "Unset: 'embedded' at 110m, 'download' at 50m/10m.",
    )
    land_scale: str = Field(default="110m", description="Natural Earth scale: 110m, 50m or 10m.")
    region: str = Field(
        default="world",
        description="Region of interest: 'world', 'bbox:minlon,minlat,maxlon,maxlat', "
        "'countries:HRV,SVN' (ISO A3 or names) or 'geojson:/path/to/polygon.geojson'.",
    )
    include_antarctica: bool = Field(default=False, description="Keep Antarctica's cells.")
    grid_max_level: int = Field(default=6, description="Deepest grid level built.")
    crawl_level: int = Field(default=6, description="Level of the crawl cells (partitions).")
    coastal_buffer_km: float = Field(
        default=10.0, description="Cells within this distance of land count as land."
    )
    natural_earth_url: str = Field(
        default="https://naciscdn.org/naturalearth",
        description="Natural Earth distribution (or a mirror) for downloads into land/ "
        "under the data root; used when natural_earth_dir is unset (50m/10m) or 'download'.",
    )
    local_photo_cells: bool = Field(
        default=True, description="With the local source: the grid also keeps every cell "
        "(inside the region) that holds a photo of the local folder, so photos on small "
        "islands, coasts or boats that the land data misses are crawled, not lost.")
    # --- ingestion orchestration (issue 4/7: sensors, batches) ---
    sources: list[str] = Field(
        default=["mapillary"],
        description="Sources crawled per cell: any of mapillary, streetview, local. The "
        "per-cell assets of other sources materialize empty, so nothing waits on them.")
    cells_per_run: int = Field(
        default=CELLS_PER_RUN, description="Crawl cells per run that the crawl-cells sensor requests.")
    images_per_cell: int = library_field(IngestSettings, "target_per_cell")
    download_workers: int = library_field(IngestSettings, "workers")
    download_threads: int = library_field(IngestSettings, "fetch_threads")
    force_recrawl: bool = library_field(IngestSettings, "force")
    retry_rounds: int = library_field(IngestSettings, "retry_rounds")
    # --- crawl plan (issue 15; geo_assets/plan.py) ---
    plan_source: str | None = Field(
        default=None, description="Source whose coverage the crawl plan estimates: "
        "mapillary (coverage tiles), streetview (metadata samples) or local (the folder's "
        "photos); unset: the first of sources.")
    plan_policy: str = library_field(PlanSettings, "policy")
    plan_total_images: int = library_field(PlanSettings, "total_images")
    plan_split_threshold: float = library_field(PlanSettings, "split_threshold")
    plan_max_split_levels: int = library_field(PlanSettings, "max_split_levels")
    plan_max_images_per_cell: int = library_field(PlanSettings, "max_images_per_cell")
    plan_coverage_zoom: int = library_field(PlanSettings, "coverage_zoom")
    plan_weights_file: str | None = library_field(PlanSettings, "weights_file")
    plan_weight_column: str = library_field(PlanSettings, "weight_column")
    streetview_usd_per_1000: float = library_field(PlanSettings, "streetview_usd_per_1000")
    # --- freshness and recovery (issue 15; geo_assets/crawl_state.py) ---
    recrawl_max_age_days: float = library_field(RecoverySettings, "max_age_days")
    retry_base_s: float = library_field(RecoverySettings, "retry_base_s")
    retry_max_s: float = library_field(RecoverySettings, "retry_max_s")
    quota_retry_s: float = library_field(RecoverySettings, "quota_retry_s")

    @field_validator("images_per_cell", "download_workers")
    @classmethod
    def _at_least_one(cls, value: int, info) -> int:
        """Checked when the resource is configured, not when a crawl has already run."""
        if value < 1:
            raise ValueError(f"{info.field_name} must be at least 1, got {value}")
        return value

    def ingest_settings(self) -> IngestSettings:
        images, filters, source_filters = self.ingest_checks()
        return IngestSettings(target_per_cell=self.images_per_cell,
                              workers=self.download_workers,
                              fetch_threads=self.download_threads,
                              retry_rounds=self.retry_rounds, images=images, filters=filters,
                              source_filters=source_filters)

    def recovery_settings(self) -> RecoverySettings:
        return RecoverySettings(max_age_days=self.recrawl_max_age_days,
                                retry_base_s=self.retry_base_s, retry_max_s=self.retry_max_s,
                                quota_retry_s=self.quota_retry_s)

    def plan_settings(self) -> PlanSettings:
        return to_library(PlanSettings, {k.removeprefix("plan_"): v
                                         for k, v in self.model_dump().items()})

    def root(self) -> DataRoot:
        return DataRoot(self.data_root)


# --- API resources (issue 4: ingestion) --------------------------------------------------
# Thin wrappers around the library clients in geo_assets/clients. Real deployments pass
# secrets as dg.EnvVar("..."), which Dagster resolves when a run starts; demo deployments set
# ``demo_seed`` and talk to an in-process demo server on loopback (no keys, no network).

DEMO_MAPILLARY_TOKEN = "demo-token"  # what the demo server accepts; not a secret
DEMO_GOOGLE_KEY = "demo-key"


class _DemoServers:
    """Demo servers started in this process, one per (seed, preset), closed at exit.

    ``geoscout demo`` starts one server for the whole run and registers it with ``use``; a
    run launched from the UI starts its own on first use.
    """

    def __init__(self) -> None:
        import threading

        self._lock = threading.Lock()
        self._servers: dict[tuple[int, str], object] = {}

    def use(self, seed: int, preset: str, server: object) -> None:
        with self._lock:
            self._servers[(seed, preset)] = server

    def forget(self, seed: int, preset: str) -> None:
        with self._lock:
            self._servers.pop((seed, preset), None)

    def current(self, seed: int, preset: str) -> object | None:
        """The server registered for (seed, preset), without starting one."""
        with self._lock:
            return self._servers.get((seed, preset))

    def url(self, seed: int, preset: str) -> str:
        with self._lock:
            server = self._servers.get((seed, preset))
            if server is None:
                import atexit

                from geo_assets.demo.server import DemoServer
                from geo_assets.demo.world import generate_world

                server = DemoServer(generate_world(seed, preset),
                                    mapillary_token=DEMO_MAPILLARY_TOKEN,
                                    google_key=DEMO_GOOGLE_KEY)
                server.__enter__()
                atexit.register(server.__exit__, None, None, None)
                self._servers[(seed, preset)] = server
            return server.url


demo_servers = _DemoServers()


class _DemoAware(dg.ConfigurableResource):
    demo_seed: int | None = Field(
        default=None,
        description="Demo mode: talk to the seeded demo world's server on loopback (started "
        "in-process when needed) instead of the real API. Unset for real crawls.")
    demo_preset: str = Field(default="demo", description="Demo world preset: demo or tiny.")
    # request budgets per endpoint class (issue 15; geo_assets/request_budget.py)
    search_per_min: int = library_field(RequestBudgetSettings, "search_per_min")
    search_per_day: int = library_field(RequestBudgetSettings, "search_per_day")
    entity_per_min: int = library_field(RequestBudgetSettings, "entity_per_min")
    entity_per_day: int = library_field(RequestBudgetSettings, "entity_per_day")
    tiles_per_min: int = library_field(RequestBudgetSettings, "tiles_per_min")
    tiles_per_day: int = library_field(RequestBudgetSettings, "tiles_per_day")
    cdn_per_min: int = library_field(RequestBudgetSettings, "cdn_per_min")
    cdn_per_day: int = library_field(RequestBudgetSettings, "cdn_per_day")

    def budget_settings(self) -> RequestBudgetSettings:
        return to_library(RequestBudgetSettings, self.model_dump())

    def demo_url(self) -> str | None:
        if self.demo_seed is None:
            return None
        return demo_servers.url(self.demo_seed, self.demo_preset)


class MapillaryResource(_DemoAware):
    """Mapillary Graph API v4. Production: ``access_token=dg.EnvVar("MAPILLARY_TOKEN")``."""

    access_token: str | None = Field(
        default=None, description="Client access token (MLY|...); sent as a header, never logged.")
    graph_url: str = Field(default="https://graph.mapillary.com",
                           description="Graph API base URL.")
    tiles_url: str = Field(default="https://tiles.mapillary.com",
                           description="Vector tile base URL (coverage discovery).")
    thumbnail_size: int = library_field(MapillarySettings, "thumb_resolution")
    requests_per_s: float = library_field(HttpSettings, "requests_per_s")

    @contextmanager
    def open_source(self) -> Iterator[object]:
        """The library's MapillarySource, its HTTP sessions closed afterwards."""
        from geo_assets.clients.mapillary import MapillaryClient, MapillarySource

        graph_url, tiles_url, token = self.endpoints()
        client = MapillaryClient(token, graph_url, tiles_url, self.library_settings())
        try:
            yield MapillarySource(client)
        finally:
            client.close()

    def library_settings(self) -> MapillarySettings:
        return MapillarySettings(thumb_resolution=self.thumbnail_size,
                                 http=HttpSettings(requests_per_s=self.requests_per_s))

    def endpoints(self) -> tuple[str, str, str]:
        """(graph URL, tiles URL, token); the demo server's when in demo mode."""
        url = self.demo_url()
        if url is not None:
            return f"{url}/mapillary", f"{url}/mapillary-tiles", DEMO_MAPILLARY_TOKEN
        if not self.access_token:
            from geo_assets.errors import InputError

            raise InputError("Mapillary access token is not set: export MAPILLARY_TOKEN "
                             "(a client token from mapillary.com/dashboard/developers)")
        return self.graph_url, self.tiles_url, self.access_token


class StreetViewResource(_DemoAware):
    """Google Street View Static API. Production: ``api_key=dg.EnvVar("GOOGLE_MAPS_API_KEY")``,
    optional ``signing_secret=dg.EnvVar("GOOGLE_MAPS_SIGNING_SECRET")``."""

    api_key: str | None = Field(default=None, description="API key; never logged or stored.")
    signing_secret: str | None = Field(
        default=None, description="URL signing secret (url-safe base64); signs image URLs.")
    base_url: str = Field(default="https://maps.googleapis.com",
                          description="Street View Static API base URL.")
    store_images_acknowledged: bool = Field(
        default=False,
        description="Google's terms forbid storing Street View images without a separate "
        "agreement with Google. Set true only if you have one (or for the demo world's "
        "synthetic images); without it the streetview_images asset refuses to write pixels.")
    headings_deg: list[float] = library_field(StreetViewSettings, "headings")
    image_size: int = Field(default=STREETVIEW_SIZE[0], description="Image side in pixels "
                            "(at most 640).")
    max_lookups_per_cell: int = library_field(StreetViewSettings, "max_lookups")
    search_radius_m: int = library_field(StreetViewSettings, "radius_m")
    requests_per_s: float = library_field(HttpSettings, "requests_per_s")

    @contextmanager
    def open_source(self) -> Iterator[object]:
        """The library's StreetViewSource (which refuses to store images unless
        ``store_images_acknowledged``), its HTTP sessions closed afterwards."""
        from geo_assets.clients.streetview import StreetViewClient, StreetViewSource

        base_url, key, secret = self.endpoints()
        client = StreetViewClient(key, secret, base_url, self.library_settings())
        try:
            yield StreetViewSource(client,
                                   acknowledge_storage_terms=self.store_images_acknowledged)
        finally:
            client.close()

    def library_settings(self) -> StreetViewSettings:
        return StreetViewSettings(
            headings=tuple(float(h) for h in self.headings_deg),
            size=(self.image_size, self.image_size), radius_m=self.search_radius_m,
            max_lookups=self.max_lookups_per_cell,
            http=HttpSettings(requests_per_s=self.requests_per_s))

    def endpoints(self) -> tuple[str, str, str | None]:
        """(base URL, key, signing secret); the demo server's when in demo mode."""
        url = self.demo_url()
        if url is not None:
            return f"{url}/google", DEMO_GOOGLE_KEY, None
        if not self.api_key:
            from geo_assets.errors import InputError

            raise InputError("Street View API key is not set: export GOOGLE_MAPS_API_KEY")
        return self.base_url, self.api_key, self.signing_secret


class LocalFolderResource(dg.ConfigurableResource):
    """Photos in a local folder: EXIF GPS, or a CSV/Parquet sidecar (file, lat, lon, group)."""

    folder: str | None = Field(
        default=None, description="Folder of photos; unset: the local source is empty.")
    sidecar: str | None = Field(
        default=None, description="CSV or Parquet with columns file, lat, lon[, group].")
    license: str | None = Field(default=None, description="Licence recorded for these photos.")
    attribution: str | None = Field(default=None, description="Attribution recorded for them.")

    @contextmanager
    def open_source(self) -> Iterator[object | None]:
        """The library's LocalFolderSource, or None when no folder is configured."""
        if not self.folder:
            yield None
            return
        from geo_assets.clients.local_folder import LocalFolderSource

        yield LocalFolderSource(self.folder, self.sidecar, license=self.license,
                                attribution=self.attribution)


# --- training ------------------------------------------------------------------------------
# ``trained_model`` launches ``torchrun -m training.train`` through the Pipes client under
# the resource key ``pipes_client`` (PipesSubprocessClient locally, GpuPipesK8sClient on k8s);
# ``evaluation_report`` reads the same run folder. Every training field, its default and its
# description come from ``training.config.TrainConfig``; only the launcher's own settings are
# declared here.


class _TrainingLauncher(dg.ConfigurableResource):
    nproc_per_node: int = Field(
        default=1, description="torchrun processes (one per GPU; gloo on CPU, nccl on GPU).")
    eval_batch_size: int = Field(default=128, description="Batch size for evaluation.")
    extra_args: list[str] = Field(default=[], description="More training CLI flags, verbatim.")

    def train_args(self, dataset: str, output_dir: str, dagster_run_id: str | None = None
                   ) -> list[str]:
        """The training CLI's flags for these settings (``training.config.to_argv``)."""
        from training.config import to_argv

        values = {"dataset": dataset, "output_dir": output_dir,
                  "dagster_run_id": dagster_run_id, **self.train_values()}
        return to_argv(values) + list(self.extra_args)

    def train_values(self) -> dict:
        """This resource's values of the training schema's fields."""
        from training.config import PER_RUN_FIELDS

        return {name: getattr(self, name) for name in type(self).model_fields
                if name not in _TrainingLauncher.model_fields and name not in PER_RUN_FIELDS}


def training_settings_class(schema: type | None = None) -> type[_TrainingLauncher]:
    """The ``training`` resource class for a training schema (``TrainConfig``): its fields,
    defaults and descriptions, less the per-run ones (dataset, output folder, resume)."""
    from training.config import PER_RUN_FIELDS, TrainConfig

    schema = schema or TrainConfig
    fields = {name: (info.annotation, info) for name, info in schema.model_fields.items()
              if name not in PER_RUN_FIELDS}
    return create_model(
        "TrainingSettings", __base__=_TrainingLauncher, __module__=__name__,
        __doc__="How a model is trained: the fields of ``training.config.TrainConfig`` (the "
        "training CLI's flags; ``python -m training.train --help``) plus the launcher's.",
        **fields)


TrainingSettings = training_settings_class()


# --- dataset build (issue 5) -------------------------------------------------------------------
# Used by pipeline/assets/dataset.py under the resource key ``dataset``.


class _DatasetSettings(dg.ConfigurableResource):
    incremental: bool = Field(
        default=True, description="Keep existing images' splits and unchanged shards.")

    def hierarchy_settings(self) -> HierarchySettings:
        return to_library(HierarchySettings, self.model_dump())

    def split_settings(self) -> SplitSettings:
        """Stratified by the cells of the coarsest level."""
        return to_library(SplitSettings, self.model_dump(), stratify_level=self.levels[0])

    def shard_settings(self) -> ShardSettings:
        return to_library(ShardSettings, self.model_dump())


DatasetSettings = create_model(
    "DatasetSettings", __base__=_DatasetSettings, __module__=__name__,
    __doc__="How the manifest becomes a dataset: the fields of the library's hierarchy, split "
    "and shard settings (geo_assets/settings.py).",
    **schema_fields(HierarchySettings), **schema_fields(SplitSettings, exclude={"stratify_level"}),
    **schema_fields(ShardSettings, exclude={"seed", "chunk_size", "threads"}))


RESOURCE_CLASSES: dict[str, type[dg.ConfigurableResource]] = {
    "settings": GeoscoutSettings, "mapillary": MapillaryResource,
    "streetview": StreetViewResource, "local_folder": LocalFolderResource,
    "dataset": DatasetSettings, "training": TrainingSettings,
}


def build_resources(overrides: dict[str, dict]) -> dict[str, object]:
    """Every resource, each from its schema's defaults with ``overrides[key]`` applied, plus
    the local Pipes client that launches training."""
    unknown = sorted(set(overrides) - set(RESOURCE_CLASSES))
    if unknown:
        from geo_assets.errors import InputError

        raise InputError(f"unknown settings group(s) {unknown}: use {sorted(RESOURCE_CLASSES)}")
    from pipeline.config_file import layered  # run config then overrides field by field

    resources: dict[str, object] = {key: layered(cls(**overrides.get(key, {})))
                                    for key, cls in RESOURCE_CLASSES.items()}
    resources["pipes_client"] = dg.PipesSubprocessClient(cwd=str(PROJECT_ROOT))
    return resources
