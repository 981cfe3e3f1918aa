"""Crawl cells in words, from the embedded Natural Earth countries."""

from __future__ import annotations

from geo_assets.cell_places import (
    NO_COUNTRY,
    bounds_text,
    cell_countries,
    cell_label,
    cell_places,
    places_summary,
)
from geo_assets.cells import cell_bounds, point_to_cell


def test_cells_name_the_countries_they_overlap():
    zagreb = point_to_cell(45.81, 15.98, 8)  # 0.7 x 1.4 degrees around Zagreb
    pacific = point_to_cell(-30.0, -140.0, 6)
    europe = point_to_cell(48.0, 10.0, 3)
    places = cell_places([zagreb, pacific, europe])
    assert places[zagreb].split(",")[0] == "Croatia"
    assert places[pacific] == NO_COUNTRY
    assert places[europe].endswith("more") and places[europe].count(",") == 2


def test_bounds_and_label_read_as_degrees():
    cell = point_to_cell(45.81, 15.98, 8)
    x0, y0, x1, y1 = cell_bounds(cell)
    assert bounds_text((x0, y0, x1, y1)) == f"lat {y0:.2f}..{y1:.2f}, lon {x0:.2f}..{x1:.2f}"
    assert cell_label(cell, "Croatia").startswith(f"{cell}: Croatia (lat ")


def test_dataset_card_country_shares_count_images_per_cell():
    from geo_assets.cards import country_shares

    cells = [point_to_cell(45.81, 15.98, 8)] * 3 + [point_to_cell(48.85, 2.35, 8),
                                                    point_to_cell(-30.0, -140.0, 6)]
    assert country_shares(cells) == [("Croatia", 0.6), ("France", 0.2), (NO_COUNTRY, 0.2)]
    assert country_shares([]) == []


def test_places_of_several_cells_in_one_bounded_line():
    zagreb = point_to_cell(45.81, 15.98, 8)
    ljubljana = point_to_cell(46.05, 14.51, 8)
    pacific = point_to_cell(-30.0, -140.0, 6)
    by_cell = cell_countries([zagreb, ljubljana, pacific])
    assert by_cell[pacific] == []
    text = places_summary(by_cell, [zagreb, ljubljana])
    assert {"Croatia", "Slovenia"} <= set(text.split(", "))  # each country once
    assert places_summary(by_cell, [pacific]) == NO_COUNTRY
    many = {str(i): [f"Country number {i:03d}"] for i in range(40)}
    bounded = places_summary(many, list(many), max_chars=60)
    assert len(bounded) <= 60 and bounded.startswith("Country number 000, ")
    shown = bounded.split(" and ")[0].count("Country number")
    assert bounded.endswith(f" and {40 - shown} more")
    common = {"a": ["Rare"], "b": ["Common"], "c": ["Common"]}
    assert places_summary(common, ["a", "b", "c"]) == "Common, Rare"  # most cells first
