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


def cell_countries(cell_ids, countries=None) -> dict[str, list[str]]:
    """Every country each cell overlaps, largest overlap first (empty: none). ``countries``:
    a frame with ``name`` and ``geometry`` (default: the embedded Natural Earth countries)."""
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
    return {cell: [n for _, n in sorted(found.get(i, []), key=lambda h: (-h[0], h[1]))]
            for i, cell in enumerate(ids)}


def cell_places(cell_ids, countries=None) -> dict[str, str]:
    """Each cell's overlapping countries, largest overlap first (``MAX_NAMES`` named, then
    "and N more"), or ``NO_COUNTRY``."""
    return {cell: _names(found) for cell, found in cell_countries(cell_ids, countries).items()}


def places_summary(by_cell: dict[str, list[str]], cell_ids, max_chars: int = 120) -> str:
    """The countries of several cells in one bounded line (a run tag): those overlapped by
    the most cells first, ``", "``-joined while they fit in ``max_chars``, then "and N more";
    ``NO_COUNTRY`` when none of the cells touches a country."""
    counts: dict[str, int] = {}
    for cell in cell_ids:
        for name in by_cell.get(str(cell), []):
            counts[name] = counts.get(name, 0) + 1
    ordered = sorted(counts, key=lambda n: (-counts[n], n))
    if not ordered:
        return NO_COUNTRY
    shown: list[str] = []
    for i, name in enumerate(ordered):
        rest = len(ordered) - i - 1
        tail = f" and {rest} more" if rest else ""
        if shown and len(", ".join([*shown, name])) + len(tail) > max_chars:
            return ", ".join(shown) + f" and {len(ordered) - len(shown)} more"
        shown.append(name)
    return ", ".join(shown)


def _names(ordered: list[str]) -> str:
    if not ordered:
        return NO_COUNTRY
    more = len(ordered) - MAX_NAMES
    return ", ".join(ordered[:MAX_NAMES]) + (f" and {more} more" if more > 0 else "")


def cell_label(cell_id: str, place: str) -> str:
    """One line for a person: ``0300: Croatia (lat .., lon ..)``."""
    return f"{cell_id or 'world'}: {place} ({bounds_text(cells_bounds([cell_id])[0])})"
