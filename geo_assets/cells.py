"""Quadtree cells over the globe in plate carree (lon/lat) space.

A cell id is its quadtree path as a string of digits: ``""`` is the world, ``"0"``..``"3"``
are level 1, ``"0312"`` is level 4. A level-L cell spans 180/2^L degrees of latitude and
360/2^L of longitude. At each level, the digit is ``2 * north + east`` where ``north`` is
the row bit (1 = upper half) and ``east`` the column bit (1 = right half)::

    2 3
    0 1

Internally a cell is ``(level, row, col)`` with ``row`` counted from the south pole and
``col`` from longitude -180. Bins are half-open ``[min, max)`` except that latitude +90
falls in the top row; longitude wraps, so +180 is the same as -180.
"""

from __future__ import annotations

import numpy as np

from geo_assets.errors import InputError

MAX_LEVEL = 24


def check_level(level: int) -> int:
    if not isinstance(level, (int, np.integer)) or isinstance(level, bool):
        raise InputError(f"grid level must be an integer, got {level!r}")
    if not 0 <= level <= MAX_LEVEL:
        raise InputError(f"grid level {level} is out of range: use 0..{MAX_LEVEL}")
    return int(level)


def check_cell_id(cell_id: str) -> str:
    if not isinstance(cell_id, str) or (cell_id and not set(cell_id) <= set("0123")):
        raise InputError(f"cell id {cell_id!r} is not a quadtree path of digits 0-3")
    check_level(len(cell_id))
    return cell_id


def cell_size_deg(level: int) -> tuple[float, float]:
    """(height in degrees of latitude, width in degrees of longitude) at ``level``."""
    check_level(level)
    return 180.0 / 2**level, 360.0 / 2**level


# --- id <-> (row, col) --------------------------------------------------------------------

def id_to_rowcol(cell_id: str) -> tuple[int, int, int]:
    """``"0312"`` -> ``(level, row, col)``."""
    check_cell_id(cell_id)
    row = col = 0
    for ch in cell_id:
        digit = ord(ch) - 48
        row = (row << 1) | (digit >> 1)
        col = (col << 1) | (digit & 1)
    return len(cell_id), row, col


def rowcol_to_id(level: int, row: int, col: int) -> str:
    check_level(level)
    n = 1 << level
    if not (0 <= row < n and 0 <= col < n):
        raise InputError(f"row/col ({row}, {col}) out of range for level {level}")
    return "".join(
        chr(48 + (((row >> b) & 1) << 1 | ((col >> b) & 1))) for b in range(level - 1, -1, -1)
    )


def rowcol_to_ids(level: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Vectorised ``rowcol_to_id``: arrays of rows and cols -> array of id strings."""
    check_level(level)
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    n = 1 << level
    for name, values in (("row", rows), ("col", cols)):
        if values.size and (values.min() < 0 or values.max() >= n):
            raise InputError(f"{name} index out of range 0..{n - 1} for level {level}")
    if level == 0:
        return np.full(rows.shape, "", dtype=object)
    shifts = np.arange(level - 1, -1, -1, dtype=np.int64)
    digits = (((rows[..., None] >> shifts) & 1) << 1) | ((cols[..., None] >> shifts) & 1)
    chars = (digits + 48).astype(np.uint8)
    flat = np.ascontiguousarray(chars.reshape(-1, level)).view(f"S{level}").ravel()
    return flat.astype(str).astype(object).reshape(rows.shape)


def ids_to_rowcol(cell_ids) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised ``id_to_rowcol`` for ids that may differ in level."""
    ids = np.asarray(cell_ids, dtype=object)
    levels = np.fromiter((len(c) for c in ids.ravel()), dtype=np.int64, count=ids.size)
    width = int(levels.max()) if ids.size else 0
    if width > MAX_LEVEL:
        raise InputError(f"cell id longer than level {MAX_LEVEL}")
    try:
        padded = np.array([c.ljust(width, "0") for c in ids.ravel()], dtype=f"S{max(width, 1)}")
    except (UnicodeEncodeError, AttributeError, TypeError) as exc:
        raise InputError("cell ids must be strings of digits 0-3") from exc
    digits = padded.view(np.uint8).reshape(-1, max(width, 1))[:, :width].astype(np.int64) - 48
    if digits.size and (digits.min() < 0 or digits.max() > 3):
        raise InputError("cell ids must be strings of digits 0-3")
    weights = 1 << np.arange(width - 1, -1, -1, dtype=np.int64)
    rows = ((digits >> 1) * weights).sum(axis=1) >> (width - levels)
    cols = ((digits & 1) * weights).sum(axis=1) >> (width - levels)
    return levels.reshape(ids.shape), rows.reshape(ids.shape), cols.reshape(ids.shape)


# --- geometry ---------------------------------------------------------------------------

def cell_bounds(cell_id: str) -> tuple[float, float, float, float]:
    """(min_lon, min_lat, max_lon, max_lat) of a cell in degrees."""
    level, row, col = id_to_rowcol(cell_id)
    dlat, dlon = 180.0 / 2**level, 360.0 / 2**level
    return (-180.0 + col * dlon, -90.0 + row * dlat, -180.0 + (col + 1) * dlon,
            -90.0 + (row + 1) * dlat)


def cells_bounds(cell_ids) -> np.ndarray:
    """Vectorised bounds: N ids -> (N, 4) array of min_lon, min_lat, max_lon, max_lat."""
    levels, rows, cols = ids_to_rowcol(cell_ids)
    dlat = 180.0 / np.exp2(levels)
    dlon = 360.0 / np.exp2(levels)
    return np.stack([-180.0 + cols * dlon, -90.0 + rows * dlat,
                     -180.0 + (cols + 1) * dlon, -90.0 + (rows + 1) * dlat], axis=-1)


def cell_center(cell_id: str) -> tuple[float, float]:
    """(lat, lon) of the cell's centre."""
    min_lon, min_lat, max_lon, max_lat = cell_bounds(cell_id)
    return (min_lat + max_lat) / 2, (min_lon + max_lon) / 2


def check_coordinates(lat, lon) -> tuple[np.ndarray, np.ndarray]:
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    if lat.shape != lon.shape:
        raise InputError(f"lat and lon differ in shape: {lat.shape} vs {lon.shape}")
    if not np.all(np.isfinite(lat)) or not np.all(np.isfinite(lon)):
        raise InputError("coordinates contain NaN or infinity")
    if np.any(np.abs(lat) > 90):
        bad = lat[np.abs(lat) > 90].ravel()[0]
        raise InputError(f"latitude {bad} is out of range: use -90..90 degrees")
    if np.any(np.abs(lon) > 180):
        bad = lon[np.abs(lon) > 180].ravel()[0]
        raise InputError(f"longitude {bad} is out of range: use -180..180 degrees")
    return lat, lon


def points_to_rowcol(lat, lon, level: int) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of the level-``level`` cell holding each point (vectorised)."""
    check_level(level)
    lat, lon = check_coordinates(lat, lon)
    n = 1 << level
    rows = _bin(lat, -90.0, 180.0 / n, n)
    rows = np.minimum(rows, n - 1)  # latitude +90 belongs to the top row
    cols = _bin(lon, -180.0, 360.0 / n, n) % n  # +180 wraps to -180
    return rows, cols


def _bin(x: np.ndarray, origin: float, step: float, n: int) -> np.ndarray:
    """Index i with ``origin + i*step <= x < origin + (i+1)*step``, edges computed exactly as
    ``cells_bounds`` computes them (the plain floor can be one off where ``x - origin``
    rounds onto an edge, e.g. x = -1e-17)."""
    idx = np.clip(np.floor((x - origin) / step).astype(np.int64), 0, n)
    idx = idx - (x < origin + idx * step)
    idx = idx + (x >= origin + (idx + 1) * step)
    return np.clip(idx, 0, n)


def points_to_cells(lat, lon, level: int) -> np.ndarray:
    """Cell id of each point at ``level``: arrays in, object array of strings out."""
    rows, cols = points_to_rowcol(lat, lon, level)
    return rowcol_to_ids(level, rows, cols)


def point_to_cell(lat: float, lon: float, level: int) -> str:
    return str(points_to_cells(np.array([lat]), np.array([lon]), level)[0])


# --- topology ---------------------------------------------------------------------------

def parent(cell_id: str) -> str:
    check_cell_id(cell_id)
    if not cell_id:
        raise InputError("the world cell '' has no parent")
    return cell_id[:-1]


def ancestor(cell_id: str, level: int) -> str:
    check_cell_id(cell_id)
    check_level(level)
    if level > len(cell_id):
        raise InputError(f"cell {cell_id!r} has no ancestor at deeper level {level}")
    return cell_id[:level]


def children(cell_id: str) -> list[str]:
    check_cell_id(cell_id)
    if len(cell_id) >= MAX_LEVEL:
        raise InputError(f"cell {cell_id!r} is at the deepest level {MAX_LEVEL}")
    return [cell_id + d for d in "0123"]


def descendants(cell_id: str, level: int) -> list[str]:
    """All cells at ``level`` inside ``cell_id``, in id order."""
    check_cell_id(cell_id)
    check_level(level)
    if level < len(cell_id):
        raise InputError(f"level {level} is above cell {cell_id!r}'s level {len(cell_id)}")
    depth = level - len(cell_id)
    suffixes = [""]
    for _ in range(depth):
        suffixes = [s + d for s in suffixes for d in "0123"]
    return [cell_id + s for s in suffixes]


def neighbours(cell_id: str) -> list[str]:
    """The up to 8 cells touching ``cell_id`` at the same level.

    Longitude wraps around the antimeridian. Across a pole, the cells of the polar row
    all touch each other at the pole point, so every other cell in that row is a neighbour.
    """
    level, row, col = id_to_rowcol(cell_id)
    n = 1 << level
    out: set[tuple[int, int]] = set()
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            if dr == dc == 0:
                continue
            r = row + dr
            if 0 <= r < n:
                out.add((r, (col + dc) % n))
    if row in (0, n - 1):
        out.update((row, c) for c in range(n))
    out.discard((row, col))
    return sorted(rowcol_to_id(level, r, c) for r, c in out)


def all_cells(level: int) -> np.ndarray:
    """Every cell id at ``level`` (4^level of them), in row-major order."""
    check_level(level)
    n = 1 << level
    rows, cols = np.divmod(np.arange(n * n, dtype=np.int64), n)
    return rowcol_to_ids(level, rows, cols)
