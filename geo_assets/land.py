"""Land filtering, vectorised: which boxes hold land, how much, which lie near it, and which
country a point is in. Geometry is lon/lat degrees (EPSG:4326), boxes are ``(N, 4)`` arrays
of ``min_lon, min_lat, max_lon, max_lat``.

Distances are on a sphere of radius ``sphere.EARTH_RADIUS_KM``. A "buffer" around a box
widens it by the buffer north-south and east-west, the east-west degrees taken at the box's
poleward edge, where a degree of longitude is shortest (so the widening is never too small).
"""

from __future__ import annotations

import io

import geopandas as gpd
import numpy as np
import shapely

from geo_assets import layout
from geo_assets.errors import DataUnavailableError, InputError
from geo_assets.regions import Region
from geo_assets.sphere import EARTH_RADIUS_KM, KM_PER_DEG
from geo_assets.storage import DataRoot


def land_parts(land) -> np.ndarray:
    """Polygons of a GeoDataFrame / GeoSeries / geometry array, one per element."""
    geoms = land.geometry.values if hasattr(land, "geometry") else land
    parts = shapely.get_parts(np.asarray(geoms, dtype=object))
    parts = parts[shapely.get_type_id(parts) == 3]
    if not len(parts):
        raise InputError("land data holds no polygon")
    return parts


def clip_to_rect(parts: np.ndarray, rect) -> np.ndarray:
    """Parts clipped to one rectangle: parts inside it stay as they are (no geometry work),
    parts outside are dropped, only the parts crossing its edge are clipped."""
    x0, y0, x1, y1 = rect
    b = shapely.bounds(parts)
    outside = (b[:, 0] >= x1) | (b[:, 2] <= x0) | (b[:, 1] >= y1) | (b[:, 3] <= y0)
    inside = (b[:, 0] >= x0) & (b[:, 2] <= x1) & (b[:, 1] >= y0) & (b[:, 3] <= y1)
    out = parts[~outside].copy()
    cross = ~inside[~outside]
    out[cross] = [shapely.clip_by_rect(g, x0, y0, x1, y1) for g in out[cross]]
    return _nonempty_polygons(out)


def _nonempty_polygons(geoms: np.ndarray) -> np.ndarray:
    parts = shapely.get_parts(geoms)
    return parts[(shapely.get_type_id(parts) == 3) & (shapely.area(parts) > 0)]


def clip_to_region(parts: np.ndarray, region: Region | None) -> np.ndarray:
    """Land parts inside the region (rectangles by fast rectangle clipping)."""
    if region is None:
        return parts
    if region.box is not None:
        return clip_to_rect(parts, region.box)
    tree = shapely.STRtree(parts)
    idx = np.unique(tree.query(region.geometry, predicate="intersects"))
    clipped = shapely.intersection(parts[idx], region.geometry)
    return _nonempty_polygons(clipped)


def clip_pairs(geoms: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """``geoms[i]`` clipped to ``boxes[i]`` (pairwise). Geometries whose bounding box lies
    inside their box are returned unchanged; rectangle clipping for the rest (GEOS'
    ``clip_by_rect`` is several times faster than a general ``intersection``)."""
    b = shapely.bounds(geoms)
    inside = ((b[:, 0] >= boxes[:, 0]) & (b[:, 2] <= boxes[:, 2])
              & (b[:, 1] >= boxes[:, 1]) & (b[:, 3] <= boxes[:, 3]))
    out = geoms.copy()
    cut = np.flatnonzero(~inside)
    out[cut] = [shapely.clip_by_rect(geoms[i], *boxes[i]) for i in cut]
    return out


def box_geoms(bounds: np.ndarray) -> np.ndarray:
    bounds = np.asarray(bounds, dtype=np.float64)
    return shapely.box(bounds[:, 0], bounds[:, 1], bounds[:, 2], bounds[:, 3])


def boxes_area_km2(bounds: np.ndarray) -> np.ndarray:
    """Exact area of lon/lat boxes on the sphere."""
    bounds = np.asarray(bounds, dtype=np.float64)
    dlon = np.radians(bounds[:, 2] - bounds[:, 0])
    band = np.sin(np.radians(bounds[:, 3])) - np.sin(np.radians(bounds[:, 1]))
    return EARTH_RADIUS_KM**2 * dlon * band


def expand_boxes(bounds: np.ndarray, buffer_km: float) -> np.ndarray:
    """Boxes widened by ``buffer_km`` (see the module note), clamped to the poles."""
    bounds = np.asarray(bounds, dtype=np.float64)
    dlat = buffer_km / KM_PER_DEG
    poleward = np.maximum(np.abs(bounds[:, 1]), np.abs(bounds[:, 3]))
    cos = np.cos(np.radians(np.minimum(poleward + dlat, 90.0)))
    dlon = np.minimum(dlat / np.maximum(cos, 1e-9), 360.0)
    return np.stack([bounds[:, 0] - dlon, np.maximum(bounds[:, 1] - dlat, -90.0),
                     bounds[:, 2] + dlon, np.minimum(bounds[:, 3] + dlat, 90.0)], axis=1)


def _wrapped(bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boxes plus their copies shifted by 360 degrees where they cross the antimeridian;
    returns (boxes, index of the original box of each)."""
    east = np.flatnonzero(bounds[:, 2] > 180.0)
    west = np.flatnonzero(bounds[:, 0] < -180.0)
    shift = np.array([360.0, 0.0, 360.0, 0.0])
    boxes = np.concatenate([bounds, bounds[east] - shift, bounds[west] + shift])
    owner = np.concatenate([np.arange(len(bounds)), east, west])
    return boxes, owner


def point_hits(polygons: np.ndarray, lat, lon) -> tuple[np.ndarray, np.ndarray]:
    """(point index, polygon index) of every point inside (or on) a polygon.

    The points go into the STRtree and each polygon is tested prepared against it; the other
    way round (points tested against unprepared 1:10m continents) is hundreds of times slower.
    """
    points = shapely.points(np.asarray(lon, dtype=np.float64).ravel(),
                            np.asarray(lat, dtype=np.float64).ravel())
    if not len(points) or not len(polygons):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    poly_idx, point_idx = shapely.STRtree(points).query(polygons, predicate="intersects")
    return point_idx, poly_idx


class LandIndex:
    """Land polygons, prepared once, for box and point queries. Like ``point_hits``, the
    query geometries go into the STRtree and the prepared land polygons are tested against it.
    """

    def __init__(self, parts: np.ndarray):
        self.parts = np.asarray(parts, dtype=object)
        shapely.prepare(self.parts)

    def box_hits(self, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(box index, land part index) of every box and part that touch or overlap."""
        bounds = np.asarray(bounds, dtype=np.float64).reshape(-1, 4)
        if not len(bounds) or not len(self.parts):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        part_idx, box_idx = shapely.STRtree(box_geoms(bounds)).query(
            self.parts, predicate="intersects")
        return box_idx, part_idx

    def intersects(self, bounds: np.ndarray) -> np.ndarray:
        """Whether each box touches or overlaps land."""
        hit = np.zeros(len(bounds), dtype=bool)
        hit[self.box_hits(bounds)[0]] = True
        return hit

    def near(self, bounds: np.ndarray, buffer_km: float) -> np.ndarray:
        """Whether land lies within ``buffer_km`` of each box (wrapping at +-180)."""
        boxes, owner = _wrapped(expand_boxes(bounds, buffer_km))
        hit = np.zeros(len(bounds), dtype=bool)
        hit[owner[self.intersects(boxes)]] = True
        return hit

    def fraction(self, bounds: np.ndarray) -> np.ndarray:
        """Share of each box's lon/lat rectangle covered by land (0..1). Each box clips
        whole land parts: for a grid over detailed land, ``grid.build_grid`` is faster."""
        bounds = np.asarray(bounds, dtype=np.float64).reshape(-1, 4)
        box_idx, part_idx = self.box_hits(bounds)
        clipped = clip_pairs(self.parts[part_idx], bounds[box_idx])
        area = np.bincount(box_idx, weights=shapely.area(clipped), minlength=len(bounds))
        box_area = (bounds[:, 2] - bounds[:, 0]) * (bounds[:, 3] - bounds[:, 1])
        return np.clip(area / box_area, 0.0, 1.0)


def points_on_land(lat, lon, index: LandIndex, buffer_km: float = 0.0) -> np.ndarray:
    """Whether each point lies on land, or within ``buffer_km`` of it."""
    lat = np.asarray(lat, dtype=np.float64).ravel()
    lon = np.asarray(lon, dtype=np.float64).ravel()
    if buffer_km > 0:
        return index.near(np.stack([lon, lat, lon, lat], axis=1), buffer_km)
    hit = np.zeros(len(lat), dtype=bool)
    hit[point_hits(index.parts, lat, lon)[0]] = True
    return hit


def countries_at(lat, lon, countries: gpd.GeoDataFrame,
                 max_distance_km: float = 0.0) -> np.ndarray:
    """ISO A3 code of the country holding each point (None where none does).

    Points on a shared border get the first country in ``countries``' order. With
    ``max_distance_km`` > 0 a point at sea takes the nearest country within that distance
    (measured in degrees of latitude), which labels photos taken just off the coastline.
    """
    lat = np.asarray(lat, dtype=np.float64).ravel()
    lon = np.asarray(lon, dtype=np.float64).ravel()
    geoms = np.asarray(countries.geometry.values, dtype=object)
    codes = countries["iso_a3"].to_numpy(dtype=object)
    pt, poly = point_hits(geoms, lat, lon)
    order = np.lexsort((poly, pt))
    pt, poly = pt[order], poly[order]
    first = np.unique(pt, return_index=True)[1]
    found = np.full(len(lat), -1, dtype=np.int64)
    found[pt[first]] = poly[first]
    missing = np.flatnonzero(found < 0)
    if max_distance_km > 0 and len(missing):
        points = shapely.points(lon[missing], lat[missing])
        src, dst = shapely.STRtree(geoms).query_nearest(
            points, max_distance=max_distance_km / KM_PER_DEG, all_matches=False)
        found[missing[src]] = dst
    out = np.full(len(lat), None, dtype=object)
    out[found >= 0] = codes[found[found >= 0]]
    return out


# --- storage --------------------------------------------------------------------------------

def write_geoparquet(frame: gpd.GeoDataFrame, root: DataRoot, relpath: str) -> str:
    """Write ``frame`` as GeoParquet to ``relpath`` atomically; return the full path."""
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return root.write_bytes(relpath, buf.getvalue())


def read_geoparquet(root: DataRoot, relpath: str, what: str, asset: str) -> gpd.GeoDataFrame:
    """The GeoParquet file that ``asset`` writes; a clear error when it is missing."""
    if not root.exists(relpath):
        raise DataUnavailableError(f"no {what} at {root.uri(relpath)}: materialize the "
                                   f"{asset} asset first")
    return gpd.read_parquet(io.BytesIO(root.read_bytes(relpath)))


def write_land(parts: np.ndarray, root: DataRoot) -> str:
    """Write land polygons as GeoParquet to ``layout.LAND_POLYGONS`` atomically."""
    land = gpd.GeoDataFrame(geometry=gpd.GeoSeries(parts, crs=4326))
    return write_geoparquet(land, root, layout.LAND_POLYGONS)


def load_land(root: DataRoot) -> gpd.GeoDataFrame:
    """The region's land polygons written by the ``land_polygons`` asset."""
    return read_geoparquet(root, layout.LAND_POLYGONS, "land polygons", "land_polygons")


def cell_land(parts: np.ndarray, cell_id: str):
    """The land part of one crawl cell as one geometry (None when the cell holds no land):
    what the Street View listing samples its lookup points in."""
    from geo_assets.cells import cell_bounds

    clipped = clip_to_rect(parts, cell_bounds(cell_id))
    return shapely.union_all(clipped) if len(clipped) else None
