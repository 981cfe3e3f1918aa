"""Maps for metadata and reports: a static PNG preview (matplotlib, no display needed) and an
interactive HTML map (folium) of lon/lat boxes or points, each coloured by a category.

Every stage that shows where things are uses these: the grid (cells by status, land),
the hierarchy (classes per level), ingest (images by source), the evaluation report
(predictions against truth). The generic helpers take plain arrays; ``colours`` are any
matplotlib / CSS colour strings, one per box or point. Non-map figures live in ``plots``.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import numpy as np
import shapely

from geo_assets.cells import cells_bounds
from geo_assets.grid import COASTAL, DROPPED, LAND, PHOTOS
from geo_assets.plots import figure_png, new_figure

if TYPE_CHECKING:
    import folium

# matplotlib and folium are imported inside the drawing functions: they are slow to import
# and only needed when a map is drawn, not when the Dagster definitions load.

STATUS_COLOURS = {LAND: "#2e7d32", COASTAL: "#f9a825", PHOTOS: "#1565c0", DROPPED: "#c62828"}
LAND_COLOUR = "#d9d9d9"
CLASS_PALETTE = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d")
TRUTH_COLOUR, PREDICTION_COLOUR = "green", "red"
DROPPED_POINT_COLOUR = "#9e9e9e"
GRID_MAP_MAX_CELLS = 20_000  # cells drawn on the grid's HTML map / PNG (deepest level that fits)
WORLD = (-180.0, -90.0, 180.0, 90.0)


def _rect_verts(bounds: np.ndarray) -> np.ndarray:
    b = np.asarray(bounds, dtype=np.float64).reshape(-1, 4)
    return np.stack([b[:, [0, 1]], b[:, [2, 1]], b[:, [2, 3]], b[:, [0, 3]]], axis=1)


# --- static PNG maps ---------------------------------------------------------------------------

def _new_axes(title: str, size_px: tuple[int, int], extent):
    fig = new_figure((size_px[0] / 100, size_px[1] / 100), dpi=100)
    ax = fig.add_axes((0.04, 0.06, 0.94, 0.86))
    ax.set_xlim(extent[0], extent[2])
    ax.set_ylim(extent[1], extent[3])
    ax.set_aspect("equal", adjustable="box")
    ax.set_facecolor("#eef4fb")
    ax.set_title(title, fontsize=11)
    ax.tick_params(labelsize=8)
    return fig, ax


def _draw_land(ax, land) -> None:
    if land is None:
        return
    from matplotlib.collections import PolyCollection

    parts = shapely.get_parts(np.asarray(getattr(land, "geometry", land), dtype=object))
    rings = [np.asarray(p.exterior.coords) for p in parts if p.geom_type == "Polygon"]
    ax.add_collection(PolyCollection(rings, facecolors=LAND_COLOUR, edgecolors="none"))


def _finish(fig, ax, legend: dict[str, str] | None) -> bytes:
    if legend:
        from matplotlib.patches import Patch

        handles = [Patch(facecolor=c, label=k) for k, c in legend.items()]
        ax.legend(handles=handles, loc="lower left", fontsize=8, framealpha=0.9)
    return figure_png(fig)


def boxes_png(bounds, colours, *, land=None, title: str = "",
              legend: dict[str, str] | None = None, size_px=(1000, 520),
              extent=WORLD) -> bytes:
    """PNG of lon/lat boxes filled with ``colours``, over optional grey land polygons."""
    fig, ax = _new_axes(title, size_px, extent)
    _draw_land(ax, land)
    from matplotlib.collections import PolyCollection

    ax.add_collection(PolyCollection(_rect_verts(bounds), facecolors=list(colours),
                                     edgecolors="white", linewidths=0.1, alpha=0.75))
    return _finish(fig, ax, legend)


def points_png(lat, lon, colours, *, land=None, title: str = "",
               legend: dict[str, str] | None = None, size_px=(1000, 520),
               extent=WORLD) -> bytes:
    """PNG of points (e.g. images) coloured by category, over optional grey land."""
    fig, ax = _new_axes(title, size_px, extent)
    _draw_land(ax, land)
    ax.scatter(np.asarray(lon), np.asarray(lat), c=list(colours), s=4, linewidths=0)
    return _finish(fig, ax, legend)


def land_png(land, region_bounds, *, title: str = "", size_px=(1000, 520)) -> bytes:
    """PNG of land polygons, framed on a region's lon/lat bounds."""
    fig, ax = _new_axes(title, size_px, extent_of([region_bounds]))
    _draw_land(ax, land)
    return _finish(fig, ax, None)


def extent_of(bounds, pad_deg: float = 2.0) -> tuple[float, float, float, float]:
    """A padded lon/lat extent around boxes, for the ``extent`` of the PNG helpers."""
    b = np.asarray(bounds, dtype=np.float64).reshape(-1, 4)
    if not len(b):
        return WORLD
    return (max(b[:, 0].min() - pad_deg, -180.0), max(b[:, 1].min() - pad_deg, -90.0),
            min(b[:, 2].max() + pad_deg, 180.0), min(b[:, 3].max() + pad_deg, 90.0))


def natural_earth_land():
    """The embedded Natural Earth 1:110m land (no network), the default land of the maps
    below."""
    from geo_assets.naturalearth import embedded_land

    return embedded_land()


def classes_png(table, level: int, land=None) -> bytes:
    """PNG of one hierarchy level's classes (``table`` as ``classes_map_html``), coarser cells
    drawn first, framed on the classes, over Natural Earth land when ``land`` is None."""
    t = table.sort("cell_level")
    colours = [CLASS_PALETTE[i % len(CLASS_PALETTE)] for i in t["class_index"].to_list()]
    bounds = cells_bounds(np.asarray(t["cell_id"].to_list(), dtype=object))
    title = f"classes at level {level}: {len(t)} classes, {int(t['n_images'].sum())} images"
    return boxes_png(bounds, colours, land=natural_earth_land() if land is None else land,
                     title=title, extent=extent_of(bounds))


def _point_extent(lat, lon, pad_deg: float = 2.0):
    """The points' bounds, padded; rows without a finite location are left out (WORLD when
    none has one)."""
    lat, lon = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
    located = np.isfinite(lat) & np.isfinite(lon)
    if not located.any():
        return WORLD
    lat, lon = lat[located], lon[located]
    return extent_of(np.array([[lon.min(), lat.min(), lon.max(), lat.max()]]), pad_deg)


def coverage_png(lat, lon, sources, kept, land=None, title: str = "") -> bytes:
    """PNG of images by source (kept ones coloured per source, dropped ones grey), framed on
    the images, over Natural Earth land when ``land`` is None."""
    sources, kept = np.asarray(sources, dtype=object), np.asarray(kept, dtype=bool)
    names = sorted(set(sources[kept].tolist()))
    legend = {n: CLASS_PALETTE[i % len(CLASS_PALETTE)] for i, n in enumerate(names)}
    if (~kept).any():
        legend["dropped"] = DROPPED_POINT_COLOUR
    colours = [legend[s] if k else DROPPED_POINT_COLOUR for s, k in zip(sources, kept)]
    title = title or f"images: {int(kept.sum())} kept, {int((~kept).sum())} dropped"
    unlocated = int((~(np.isfinite(np.asarray(lat, dtype=np.float64))
                       & np.isfinite(np.asarray(lon, dtype=np.float64)))).sum())
    if unlocated:  # e.g. photos without GPS or a sidecar row: in the manifest, not on the map
        title += f"; {unlocated} without a location, not drawn"
    return points_png(lat, lon, colours, land=natural_earth_land() if land is None else land,
                      title=title, legend=legend, extent=_point_extent(lat, lon))


def predictions_png(true_lat, true_lon, pred_lat, pred_lon, land=None,
                    title: str = "predictions vs truth") -> bytes:
    """PNG of predictions against truth: a grey line from each true place (green) to its
    prediction (red), over Natural Earth land when ``land`` is None."""
    from matplotlib.collections import LineCollection

    t_lat, t_lon, p_lat, p_lon = (np.asarray(a, dtype=np.float64)
                                  for a in (true_lat, true_lon, pred_lat, pred_lon))
    extent = _point_extent(np.concatenate([t_lat, p_lat]), np.concatenate([t_lon, p_lon]))
    fig, ax = _new_axes(title, (1000, 520), extent)
    _draw_land(ax, natural_earth_land() if land is None else land)
    segments = np.stack([np.stack([t_lon, t_lat], 1), np.stack([p_lon, p_lat], 1)], axis=1)
    ax.add_collection(LineCollection(segments, colors="grey", linewidths=0.6, alpha=0.6))
    ax.scatter(t_lon, t_lat, c=TRUTH_COLOUR, s=8, linewidths=0)
    ax.scatter(p_lon, p_lat, c=PREDICTION_COLOUR, s=8, linewidths=0)
    return _finish(fig, ax, {"truth": TRUTH_COLOUR, "prediction": PREDICTION_COLOUR})


def prediction_png(lat: float, lon: float, cell_ids=(), probabilities=(), land=None,
                   title: str = "") -> bytes:
    """PNG of one photo's predicted place (red point) and its top cells shaded by
    probability, for ``predict``; over Natural Earth land when ``land`` is None."""
    from matplotlib.patches import Rectangle

    bounds = cells_bounds(np.asarray(list(cell_ids), dtype=object)) if len(cell_ids) else \
        np.zeros((0, 4))
    frame = np.vstack([bounds, [[lon, lat, lon, lat]]])
    fig, ax = _new_axes(title or f"predicted place {lat:.3f}, {lon:.3f}", (800, 480),
                        extent_of(frame, pad_deg=5.0))
    _draw_land(ax, natural_earth_land() if land is None else land)
    for (x0, y0, x1, y1), p in zip(bounds, probabilities):
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, facecolor=PREDICTION_COLOUR,
                               alpha=0.15 + 0.6 * float(p), edgecolor="#7f0000",
                               linewidth=0.5))
    ax.scatter([lon], [lat], c=PREDICTION_COLOUR, s=40, edgecolors="black", linewidths=0.5)
    return _finish(fig, ax, {"predicted place": PREDICTION_COLOUR})


# --- interactive HTML maps ---------------------------------------------------------------------

def _legend_html(title: str, legend: dict[str, str] | None) -> str:
    rows = "".join(f'<div><span style="background:{c};width:12px;height:12px;'
                   f'display:inline-block;margin-right:6px"></span>{html.escape(k)}</div>'
                   for k, c in (legend or {}).items())
    return ('<div style="position:fixed;bottom:24px;left:24px;z-index:9999;background:white;'
            'padding:8px 10px;border:1px solid #999;font:12px sans-serif">'
            f"<b>{html.escape(title)}</b>{rows}</div>")


def _land_geojson(tolerance_deg: float = 0.05) -> dict:
    """Natural Earth land as GeoJSON for the interactive maps' offline base layer."""
    import geopandas as gpd

    from geo_assets.naturalearth import embedded_land

    land = embedded_land().geometry.simplify(tolerance_deg)
    return gpd.GeoDataFrame(geometry=land, crs="EPSG:4326").__geo_interface__


def _base_map(title: str, legend: dict[str, str] | None) -> folium.Map:
    """A map that draws offline: Leaflet inlined, Natural Earth land as a vector layer; the
    OpenStreetMap layer (off by default in the layer control) needs internet."""
    import folium

    from geo_assets.leaflet import offline

    fmap = offline(folium.Map(location=(20, 0), zoom_start=2, tiles=None,
                              world_copy_jump=True))
    folium.GeoJson(_land_geojson(), name="land (Natural Earth)", control=False,
                   style_function=lambda _: {"fillColor": LAND_COLOUR, "color": "#aaaaaa",
                                             "weight": 0.5, "fillOpacity": 1.0}).add_to(fmap)
    folium.TileLayer("OpenStreetMap", name="OpenStreetMap (needs internet)", show=False,
                     overlay=True).add_to(fmap)
    fmap.get_root().html.add_child(folium.Element(_legend_html(title, legend)))
    return fmap


def boxes_map(bounds, colours, *, tooltips=None, title: str = "",
              legend: dict[str, str] | None = None) -> folium.Map:
    """Interactive map of lon/lat boxes; ``tooltips`` are plain text, one per box."""
    import folium

    verts = _rect_verts(bounds)
    tips = [""] * len(verts) if tooltips is None else [str(t) for t in tooltips]
    features = [{"type": "Feature",
                 "properties": {"colour": c, "tip": t},
                 "geometry": {"type": "Polygon",
                              "coordinates": [v.tolist() + [v[0].tolist()]]}}
                for v, c, t in zip(verts, colours, tips)]
    fmap = _base_map(title, legend)
    folium.GeoJson(
        {"type": "FeatureCollection", "features": features},
        style_function=lambda f: {"fillColor": f["properties"]["colour"], "color": "#555",
                                  "weight": 0.3, "fillOpacity": 0.55},
        tooltip=folium.GeoJsonTooltip(fields=["tip"], labels=False),
    ).add_to(fmap)
    if len(verts):
        fmap.fit_bounds([[float(verts[..., 1].min()), float(verts[..., 0].min())],
                         [float(verts[..., 1].max()), float(verts[..., 0].max())]])
    return fmap


def points_map(lat, lon, colours, *, tooltips=None, title: str = "",
               legend: dict[str, str] | None = None) -> folium.Map:
    """Interactive map of points as small circles."""
    import folium

    fmap = _base_map(title, legend)
    tips = [None] * len(lat) if tooltips is None else [str(t) for t in tooltips]
    for y, x, c, t in zip(np.asarray(lat), np.asarray(lon), colours, tips):
        folium.CircleMarker((float(y), float(x)), radius=3, color=c, fill=True,
                            fill_opacity=0.8, weight=0, tooltip=t).add_to(fmap)
    return fmap


def map_html(fmap: folium.Map) -> bytes:
    """The map as a standalone HTML page that needs no network (write it with
    ``DataRoot.write_bytes``)."""
    import folium

    folium.LayerControl(collapsed=True).add_to(fmap)
    return fmap.get_root().render().encode()


# --- the maps of each stage ----------------------------------------------------------------------

def grid_map_level(counts, crawl_level: int, max_cells: int = GRID_MAP_MAX_CELLS) -> int:
    """The level to draw: the crawl level when its cells (kept and dropped) fit on a map, else
    the deepest that does. ``counts``: ``level``, ``kept``, ``dropped`` per level."""
    total = dict(zip(counts["level"], counts["kept"] + counts["dropped"]))
    fitting = [lv for lv, n in total.items() if n <= max_cells] or [1]
    return crawl_level if crawl_level in fitting else max(fitting)


def _grid_level(cells, dropped, level: int):
    """Cell ids, statuses, land fractions and bounds of one level, dropped cells included."""
    kept = cells[cells["level"] == level]
    gone = dropped[dropped["level"] == level]
    ids = np.concatenate([kept["cell_id"].to_numpy(), gone["cell_id"].to_numpy()])
    status = np.concatenate([kept["status"].to_numpy(),
                             np.full(len(gone), DROPPED, dtype=object)])
    fraction = np.concatenate([kept["land_fraction"].to_numpy(), np.zeros(len(gone))])
    bounds = cells_bounds(ids) if len(ids) else np.zeros((0, 4))
    title = f"grid level {level}: {len(kept)} cells kept, {len(gone)} dropped"
    return ids, status, fraction, bounds, title


def grid_png(cells, dropped, level: int, land=None) -> bytes:
    """PNG of one grid level's cells (``cells``: ``cell_id``, ``level``, ``status``,
    ``land_fraction``; ``dropped``: ``cell_id``, ``level``) coloured by status, over land."""
    _, status, _, bounds, title = _grid_level(cells, dropped, level)
    return boxes_png(bounds, [STATUS_COLOURS[s] for s in status], land=land, title=title,
                     legend=STATUS_COLOURS, extent=extent_of(bounds))


def grid_map_html(cells, dropped, level: int) -> bytes:
    """HTML map of one grid level's cells coloured by status, with id, status and land
    share in each tooltip (inputs as ``grid_png``)."""
    ids, status, fraction, bounds, title = _grid_level(cells, dropped, level)
    tips = [f"{i} {s} land {f:.0%}" for i, s, f in zip(ids, status, fraction)]
    return map_html(boxes_map(bounds, [STATUS_COLOURS[s] for s in status], tooltips=tips,
                              title=title, legend=STATUS_COLOURS))


def classes_map_html(table, level: int) -> bytes:
    """HTML map of one hierarchy level's classes (``table``: a level table with
    ``cell_id``, ``cell_level``, ``class_index``, ``n_images``, ``n_train``), coarser cells
    drawn first so that finer ones stay on top."""
    t = table.sort("cell_level")
    colours = [CLASS_PALETTE[i % len(CLASS_PALETTE)] for i in t["class_index"].to_list()]
    tips = [f"class {c}: cell '{cell}' ({n} images, {k} train)" for c, cell, n, k in
            t.select("class_index", "cell_id", "n_images", "n_train").rows()]
    bounds = cells_bounds(np.asarray(t["cell_id"].to_list(), dtype=object))
    return map_html(boxes_map(bounds, colours, tooltips=tips,
                              title=f"classes at level {level}"))


def predictions_map_html(true_lat, true_lon, pred_lat, pred_lon, tooltips) -> bytes:
    """HTML map of predictions against truth: a grey line from each true place (green) to
    its prediction (red); ``tooltips`` plain text, one per image."""
    import folium

    fmap = _base_map("predictions vs truth",
                     {"truth": TRUTH_COLOUR, "prediction": PREDICTION_COLOUR})
    for t_lat, t_lon, p_lat, p_lon, tip in zip(true_lat, true_lon, pred_lat, pred_lon,
                                               tooltips):
        truth, guess = (float(t_lat), float(t_lon)), (float(p_lat), float(p_lon))
        tip = html.escape(str(tip))
        folium.PolyLine([truth, guess], color="grey", weight=1, opacity=0.6).add_to(fmap)
        folium.CircleMarker(truth, radius=3, color=TRUTH_COLOUR, fill=True,
                            tooltip=tip).add_to(fmap)
        folium.CircleMarker(guess, radius=3, color=PREDICTION_COLOUR, fill=True,
                            tooltip=tip).add_to(fmap)
    return map_html(fmap)


def budget_png(bounds, values, *, land=None, title: str = "", size_px=(1000, 520)) -> bytes:
    """PNG of cells shaded by a count (the crawl plan's image budgets), framed on the cells."""
    import matplotlib

    v = np.asarray(values, dtype=np.float64)
    top = float(v.max()) if len(v) and v.max() > 0 else 1.0
    cmap = matplotlib.colormaps["viridis"]
    colours = [cmap(x / top) for x in v]
    legend = {f"{round(top * q)} images": matplotlib.colors.to_hex(cmap(q))
              for q in (0.0, 0.5, 1.0)}
    return boxes_png(bounds, colours, land=land, title=title, legend=legend, size_px=size_px,
                     extent=extent_of(bounds))
