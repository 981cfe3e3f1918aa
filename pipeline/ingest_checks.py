"""The image checks and filters of every crawl, as fields of the ``settings`` resource.

``filter_*`` and ``image_*`` are generated from ``FilterSettings`` and ``ImageSettings``
(``geo_assets/settings.py``: each default and description written there once), so every
threshold is a key of ``geoscout.yaml``, a launchpad field and a library value alike;
``source_filters`` overrides them for one source. Values are checked when the resource is
configured: a bad one is an error naming it.
"""

from __future__ import annotations

import dataclasses
import typing

import dagster as dg
from pydantic import Field, create_model, field_validator, model_validator

from geo_assets.manifest import Source
from geo_assets.settings import FilterSettings, ImageSettings
from pipeline.schema import schema_fields, to_library

FILTER_PREFIX, IMAGE_PREFIX = "filter_", "image_"
FILTER_SOURCES = tuple(s.value for s in Source)


class _IngestChecks(dg.ConfigurableResource):
    """The image checks and filters of every crawl (``filter_*``, ``image_*``: the fields of
    ``FilterSettings`` and ``ImageSettings``), and per-source filter overrides."""

    source_filters: dict[str, dict[str, float]] = Field(
        default={}, description="Filters of one source instead of the filter_* settings: "
        "{source: {field: value}} with FilterSettings field names, e.g. {local: "
        "{min_brightness: 10, phash_max_distance: -1}}; sources: mapillary, streetview, local.")

    @field_validator("source_filters")
    @classmethod
    def _known_sources_and_fields(cls, value: dict) -> dict:
        fields = {f.name for f in dataclasses.fields(FilterSettings)}
        for source, over in value.items():
            if source not in FILTER_SOURCES:
                raise ValueError(f"source {source!r} is unknown; allowed: "
                                 f"{', '.join(FILTER_SOURCES)}")
            unknown = sorted(set(over) - fields)
            if unknown:
                raise ValueError(f"{source}: unknown filter setting(s) {unknown}; allowed: "
                                 f"{', '.join(sorted(fields))}")
        return value

    @model_validator(mode="after")
    def _valid_filters(self):
        """Checked when the resource is configured (a settings file, run config)."""
        try:
            self.ingest_checks()
        except ValueError as exc:  # named as the settings file names them
            raise ValueError(f"{FILTER_PREFIX}* / {IMAGE_PREFIX}* / source_filters: {exc}"
                             ) from None
        return self

    def ingest_checks(self) -> tuple[ImageSettings, FilterSettings, tuple]:
        """(image checks, filters, per-source filters) as the library's settings."""
        values = self.model_dump()
        images = to_library(ImageSettings, values, prefix=IMAGE_PREFIX)
        base = to_library(FilterSettings, values, prefix=FILTER_PREFIX)
        hints = typing.get_type_hints(FilterSettings)
        per_source = tuple(
            (source, dataclasses.replace(base, **{k: hints[k](v) for k, v in over.items()}))
            for source, over in sorted(self.source_filters.items()))
        return images, base, per_source


IngestChecks = create_model(
    "IngestChecks", __base__=_IngestChecks, __module__=__name__,
    **schema_fields(FilterSettings, prefix=FILTER_PREFIX),
    **schema_fields(ImageSettings, prefix=IMAGE_PREFIX))
