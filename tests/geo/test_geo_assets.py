"""The grid assets materialize through Dagster on a temporary data root."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from geo_assets import grid as grid_lib
from geo_assets import layout
from geo_assets.errors import InputError
from pipeline.assets import grid
from pipeline.resources import GeoscoutSettings, LocalFolderResource

ASSETS = [grid.land_polygons, grid.grid_cells]
CHECKS = dg.load_asset_checks_from_modules([grid])


def materialize(tmp_path, **settings) -> dg.ExecuteInProcessResult:
    with dg.instance_for_test() as instance:
        return dg.materialize(
            [*ASSETS, *CHECKS], instance=instance,
            resources={"settings": GeoscoutSettings(data_root=str(tmp_path / "data"),
                                                    **settings),
                       "local_folder": LocalFolderResource()})


def metadata(result, asset: str) -> dict:
    (event,) = result.asset_materializations_for_node(asset)
    return event.metadata


def test_grid_assets_materialize_on_embedded_data(tmp_path):
    result = materialize(tmp_path, grid_max_level=5, crawl_level=4)
    assert result.success
    root = tmp_path / "data"
    loaded = grid_lib.load_grid(GeoscoutSettings(data_root=str(root)).root())
    meta = metadata(result, "grid_cells")
    assert meta["n_cells"].value == len(loaded)
    assert meta["n_crawl_cells"].value == len(grid_lib.crawl_cells(loaded, 4))
    rows = [r.data for r in meta["counts_per_level"].value.records]
    assert [r["level"] for r in rows] == [1, 2, 3, 4, 5]
    assert [r["kept"] for r in rows] == loaded.groupby("level").size().tolist()
    assert meta["preview"].value.startswith("![grid level 4](data:image/png;base64,")
    html = Path(meta["map"].value).read_text()
    assert "leaflet" in html.lower() and "0321 land" in html  # tooltip of a cell in Africa
    assert (root / layout.LAND_POLYGONS).exists()
    assert (root / layout.GRID_PREVIEW).read_bytes()[:4] == b"\x89PNG"
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"land_polygons_valid": True, "grid_cells_nested": True,
                      "grid_cells_land_ratio": True}
    version = result.asset_materializations_for_node("grid_cells")[0].tags
    assert version.get("dagster/data_version")


def test_grid_assets_on_local_files_and_countries(tmp_path, shared_data):
    folder = shared_data("naturalearth")
    result = materialize(tmp_path, natural_earth_dir=str(folder), land_scale="50m",
                         region="countries:HRV,SVN", grid_max_level=7, crawl_level=7)
    meta = metadata(result, "land_polygons")
    assert meta["source"].value.endswith("ne_50m_land.geojson")
    loaded = grid_lib.load_grid(GeoscoutSettings(data_root=str(tmp_path / "data")).root())
    crawl = loaded[loaded["level"] == 7]
    assert 5 < len(crawl) < 40  # cells of 2.8 x 1.4 degrees over Croatia and Slovenia
    assert crawl["min_lon"].min() >= 11 and crawl["max_lon"].max() <= 22
    assert crawl["min_lat"].min() >= 41 and crawl["max_lat"].max() <= 48


@pytest.mark.parametrize("settings, message", [
    ({"region": "bbox:20,50,10,40"}, "inverted"),
    ({"region": "countries:Atlantis"}, "unknown country 'Atlantis'"),
    ({"grid_max_level": 3, "crawl_level": 5}, "crawl_level 5"),
    ({"land_scale": "1m"}, "land_scale '1m'"),
])
def test_bad_settings_fail_with_a_clear_error(tmp_path, settings, message):
    """Invoked directly (no run): the asset bodies check their settings first."""
    resource = GeoscoutSettings(data_root=str(tmp_path / "data"), **settings)
    with pytest.raises(InputError, match=message):
        grid.land_polygons(dg.build_asset_context(), settings=resource)
        grid.grid_cells(dg.build_asset_context(), settings=resource,
                        local_folder=LocalFolderResource())


def test_checks_are_loadable_next_to_their_assets():
    keys = {(c.asset_key.to_user_string(), c.name) for d in CHECKS for c in d.check_keys}
    assert keys == {("land_polygons", "land_polygons_valid"),
                    ("grid_cells", "grid_cells_nested"),
                    ("grid_cells", "grid_cells_land_ratio")}
