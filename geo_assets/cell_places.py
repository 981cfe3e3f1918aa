"""Where on Earth a crawl cell is, in words: the countries it overlaps and its bounds.

Quadtree ids ("0300") mean nothing to a person; the Dagster UI shows these next to each
crawl-cell partition. Countries come from the embedded Natural Earth 1:110m polygons (no
network), so a cell over small islands that 1:110m leaves out reads "sea or no country".
"""

from __future__ import annotations

import numpy as np
import shapely

from geo_assets.cells import cells_bounds

MAX_NAMES = 3  # countries named per cell; the rest are counted
NO_COUNTRY = "sea or no country"


def bounds_text(bounds) -> str:
    """``(min_lon, min_lat, max_lon, max_lat)`` as ``lat 45.00..46.41 N, lon 15.47..16.88 E``
    (signed degrees, so that a range across the equator or meridian stays readable)."""
    x0, y0, x1, y1 = (float(v) for v in bounds)
    return f"lat {y0:.2f}..{y1:.2f}, lon {x0:.2f}..{x1:.2f}"


def cell_places(cell_ids, countries=None) -> dict[str, str]:
    """Each cell's overlapping countries, largest overlap first (``MAX_NAMES`` named, then
    "and N more"), or ``NO_COUNTRY``. ``countries``: a frame with ``name`` and ``geometry``
    (default: the embedded Natural Earth countries)."""
    ids = [str(c) for c in cell_ids]
    if not ids:
        return {}
    if countries is None:
        from geo_assets.naturalearth import embedded_countries

        countries = embedded_countries()
    names = np.asarray(countries["name"], dtype=object)
    geoms = np.asarray(countries.geometry, dtype=object)
    boxes = shapely.box(*cells_bounds(np.asarray(ids, dtype=object)).T)
    cell_idx, country_idx = shapely.STRtree(geoms).query(boxes, predicate="intersects")
    areas = shapely.area(shapely.intersection(boxes[cell_idx], geoms[country_idx]))
    found: dict[int, list[tuple[float, str]]] = {}
    for c, k, a in zip(cell_idx.tolist(), country_idx.tolist(), areas.tolist()):
        found.setdefault(c, []).append((a, names[k]))
    return {cell: _names(found.get(i, [])) for i, cell in enumerate(ids)}


def _names(hits: list[tuple[float, str]]) -> str:
    ordered = [n for _, n in sorted(hits, key=lambda h: (-h[0], h[1]))]
    if not ordered:
        return NO_COUNTRY
    more = len(ordered) - MAX_NAMES
    return ", ".join(ordered[:MAX_NAMES]) + (f" and {more} more" if more > 0 else "")


def cell_label(cell_id: str, place: str) -> str:
    """One line for a person: ``0300: Croatia (lat .., lon ..)``."""
    return f"{cell_id or 'world'}: {place} ({bounds_text(cells_bounds([cell_id])[0])})"
