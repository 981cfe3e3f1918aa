"""Maps for metadata and reports: a static PNG preview (matplotlib, no display needed) and an
interactive HTML map (folium) of lon/lat boxes or points, each coloured by a category.

Every stage that shows where things are uses these: the grid (cells by status), ingest
(images by source), reports (errors by country). Inputs are plain arrays; ``colours`` are
any matplotlib / CSS colour strings, one per box or point.
"""

from __future__ import annotations

import base64
import html
import io

import folium
import numpy as np
import shapely

# matplotlib is imported inside the drawing functions: it is slow to import and only needed
# when a figure is drawn, not when the Dagster definitions load.

STATUS_COLOURS = {"land": "#2e7d32", "coastal": "#f9a825", "dropped": "#c62828"}
LAND_COLOUR = "#d9d9d9"


def _rect_verts(bounds: np.ndarray) -> np.ndarray:
    b = np.asarray(bounds, dtype=np.float64).reshape(-1, 4)
    return np.stack([b[:, [0, 1]], b[:, [2, 1]], b[:, [2, 3]], b[:, [0, 3]]], axis=1)


def _new_axes(title: str, size_px: tuple[int, int], extent):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size_px[0] / 100, size_px[1] / 100), dpi=100)
    FigureCanvasAgg(fig)
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
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def boxes_png(bounds, colours, *, land=None, title: str = "",
              legend: dict[str, str] | None = None, size_px=(1000, 520),
              extent=(-180, -90, 180, 90)) -> bytes:
    """PNG of lon/lat boxes filled with ``colours``, over optional grey land polygons."""
    fig, ax = _new_axes(title, size_px, extent)
    _draw_land(ax, land)
    from matplotlib.collections import PolyCollection

    ax.add_collection(PolyCollection(_rect_verts(bounds), facecolors=list(colours),
                                     edgecolors="white", linewidths=0.1, alpha=0.75))
    return _finish(fig, ax, legend)


def points_png(lat, lon, colours, *, land=None, title: str = "",
               legend: dict[str, str] | None = None, size_px=(1000, 520),
               extent=(-180, -90, 180, 90)) -> bytes:
    """PNG of points (e.g. images) coloured by category, over optional grey land."""
    fig, ax = _new_axes(title, size_px, extent)
    _draw_land(ax, land)
    ax.scatter(np.asarray(lon), np.asarray(lat), c=list(colours), s=4, linewidths=0)
    return _finish(fig, ax, legend)


def png_markdown(png: bytes, alt: str = "preview") -> str:
    """Markdown with the PNG inlined, for ``dg.MetadataValue.md``."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def _legend_html(title: str, legend: dict[str, str] | None) -> str:
    rows = "".join(f'<div><span style="background:{c};width:12px;height:12px;'
                   f'display:inline-block;margin-right:6px"></span>{html.escape(k)}</div>'
                   for k, c in (legend or {}).items())
    return ('<div style="position:fixed;bottom:24px;left:24px;z-index:9999;background:white;'
            'padding:8px 10px;border:1px solid #999;font:12px sans-serif">'
            f"<b>{html.escape(title)}</b>{rows}</div>")


def _base_map(title: str, legend: dict[str, str] | None) -> folium.Map:
    fmap = folium.Map(location=(20, 0), zoom_start=2, tiles="OpenStreetMap",
                      world_copy_jump=True)
    fmap.get_root().html.add_child(folium.Element(_legend_html(title, legend)))
    return fmap


def boxes_map(bounds, colours, *, tooltips=None, title: str = "",
              legend: dict[str, str] | None = None) -> folium.Map:
    """Interactive map of lon/lat boxes; ``tooltips`` are plain text, one per box."""
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


def extent_of(bounds, pad_deg: float = 2.0) -> tuple[float, float, float, float]:
    """A padded lon/lat extent around boxes, for the ``extent`` of the PNG helpers."""
    b = np.asarray(bounds, dtype=np.float64).reshape(-1, 4)
    if not len(b):
        return (-180.0, -90.0, 180.0, 90.0)
    return (max(b[:, 0].min() - pad_deg, -180.0), max(b[:, 1].min() - pad_deg, -90.0),
            min(b[:, 2].max() + pad_deg, 180.0), min(b[:, 3].max() + pad_deg, 90.0))


def points_map(lat, lon, colours, *, tooltips=None, title: str = "",
               legend: dict[str, str] | None = None) -> folium.Map:
    """Interactive map of points as small circles."""
    fmap = _base_map(title, legend)
    tips = [None] * len(lat) if tooltips is None else [str(t) for t in tooltips]
    for y, x, c, t in zip(np.asarray(lat), np.asarray(lon), colours, tips):
        folium.CircleMarker((float(y), float(x)), radius=3, color=c, fill=True,
                            fill_opacity=0.8, weight=0, tooltip=t).add_to(fmap)
    return fmap


def map_html(fmap: folium.Map) -> bytes:
    """The map as a standalone HTML page (write it with ``DataRoot.write_bytes``)."""
    return fmap.get_root().render().encode()
