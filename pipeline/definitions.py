"""Assembles the geoscout Dagster definitions; no logic lives here."""

import dagster as dg

from pipeline import constants
from pipeline.assets import grid
from pipeline.resources import GeoscoutSettings


def build_definitions() -> dg.Definitions:
    grid_assets = dg.load_assets_from_modules([grid], group_name=constants.GRID)
    return dg.Definitions(
        assets=[*grid_assets],
        asset_checks=dg.load_asset_checks_from_modules([grid]),
        resources={"settings": GeoscoutSettings()},
    )


defs = build_definitions()
