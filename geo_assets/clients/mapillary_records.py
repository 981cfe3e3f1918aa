"""Mapillary Graph API image entities -> typed candidates, strictly (see ``records``)."""

from __future__ import annotations

import math

from geo_assets.clients.base import Candidate
from geo_assets.clients.records import (
    RecordError,
    coordinate,
    epoch_ms,
    optional_bool,
    optional_float,
    optional_link,
    optional_text,
    record_digest,
    rejected,
    safe_coordinates,
    source_id,
)
from geo_assets.manifest import Source

LICENSE = "CC BY-SA 4.0"


def _geometry(entity: dict) -> tuple[float, float]:
    geometry = entity.get("computed_geometry") or entity.get("geometry")
    if not isinstance(geometry, dict):
        raise RecordError(f"geometry is {type(geometry).__name__}, not a GeoJSON point",
                          location=True)
    coords = geometry.get("coordinates")
    if not isinstance(coords, list) or len(coords) < 2:
        raise RecordError("geometry has no [lon, lat] coordinates", location=True)
    return coordinate(coords[1], "latitude", 90), coordinate(coords[0], "longitude", 180)


def _fields(entity: dict, thumb_field: str) -> dict:
    creator = entity.get("creator")
    if creator is not None and not isinstance(creator, dict):
        raise RecordError(f"creator is {type(creator).__name__}, not an object")
    username = optional_text((creator or {}).get("username"), "creator.username")
    heading = optional_float(entity.get("computed_compass_angle",
                                        entity.get("compass_angle")), "compass_angle")
    thumb = optional_link(entity.get(thumb_field), thumb_field)
    return {"group_id": optional_text(entity.get("sequence"), "sequence"), "creator": username,
            "captured_at_ms": epoch_ms(entity.get("captured_at"), "captured_at"),
            "heading_deg": heading % 360.0 if heading is not None else None,
            "is_pano": optional_bool(entity.get("is_pano"), "is_pano"), "license": LICENSE,
            "attribution": f"{username or 'unknown contributor'} / Mapillary, {LICENSE}",
            "fetch_ref": thumb}


def parse_image(entity: object, thumb_field: str) -> Candidate:
    """One Graph API image entity -> Candidate, strictly typed. A malformed entity becomes a
    rejected candidate (``no_location`` / ``invalid_record``) whose error names the field."""
    source = str(Source.MAPILLARY)
    if not isinstance(entity, dict):
        return rejected(source, f"invalid-{record_digest(entity)}",
                        f"entity is {type(entity).__name__}, not an object", location=False)
    try:
        sid = source_id(entity.get("id"))
    except RecordError as exc:
        return rejected(source, f"invalid-{record_digest(entity)}", f"mapillary entity: {exc}",
                        location=False)
    try:
        lat, lon = _geometry(entity)
        return Candidate(image_id=f"{source}:{sid}", source=source, source_id=sid,
                         lat_deg=lat, lon_deg=lon, **_fields(entity, thumb_field))
    except RecordError as exc:
        geometry = entity.get("computed_geometry") or entity.get("geometry")
        coords = geometry.get("coordinates") if isinstance(geometry, dict) else None
        lat, lon = (safe_coordinates(coords[1], coords[0])
                    if isinstance(coords, list) and len(coords) >= 2 else (math.nan, math.nan))
        return rejected(source, sid, f"mapillary image {sid}: {exc}", location=exc.location,
                        lat=lat, lon=lon)
