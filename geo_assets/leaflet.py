"""Leaflet shipped with geoscout, so that folium maps draw with no network.

folium links Leaflet, jQuery, Bootstrap and Font Awesome from CDNs; on an offline machine
(many GPU clusters) those pages stay blank. geoscout's maps use only core Leaflet (GeoJSON,
polylines, circle markers, tooltips, layer control), so ``offline(fmap)`` drops folium's CDN
links and inlines Leaflet 1.9.3 (BSD-2-Clause, ``static/leaflet/LICENSE.txt``; the files are
``dist/leaflet.js`` and ``dist/leaflet.css`` of the npm package ``leaflet@1.9.3``, the version
folium 0.20 links).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import folium

STATIC = Path(__file__).resolve().parent / "static" / "leaflet"
VERSION = "1.9.3"
# Sea behind the land layer, and a text label for the layer control (its icon is an image
# file beside leaflet.css that an inlined page cannot reference).
EXTRA_CSS = (".leaflet-container{background:#eef4fb}"
             ".leaflet-control-layers-toggle{background-image:none!important;width:auto!important;"
             "padding:0 8px;line-height:36px;font:12px sans-serif;color:#333}"
             ".leaflet-control-layers-toggle::after{content:'layers'}")


@lru_cache(maxsize=1)
def inline_assets() -> str:
    """Leaflet's CSS and JavaScript as inline ``<style>`` and ``<script>`` elements."""
    css = (STATIC / "leaflet.css").read_text(encoding="utf-8")
    js = (STATIC / "leaflet.js").read_text(encoding="utf-8")
    return f"<style>{css}{EXTRA_CSS}</style>\n<script>{js}</script>"


def offline(fmap: folium.Map) -> folium.Map:
    """The map, changed in place to carry Leaflet inline instead of linking CDNs."""
    import folium

    fmap.default_js = []
    fmap.default_css = []
    fmap.get_root().header.add_child(folium.Element(inline_assets()), name="leaflet_inline")
    return fmap
