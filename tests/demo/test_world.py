"""The demo world generator: determinism, shape of coverage, artefacts, accuracy ceilings."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from itertools import pairwise

import numpy as np
import pytest

from geo_assets.cells import points_to_cells
from geo_assets.demo.places import locate_countries
from geo_assets.demo.world import ARTEFACTS, build_world, generate_world
from geo_assets.errors import InputError


@pytest.fixture(scope="module")
def demo():
    return generate_world(0, "demo")


def test_same_seed_same_world_and_other_seed_other_world():
    a, b = build_world(3, "tiny"), build_world(3, "tiny")
    assert a == b
    c = build_world(4, "tiny")
    assert {im.image_id for im in a.images}.isdisjoint({im.image_id for im in c.images})
    assert [p.lat for p in a.panoramas] != [p.lat for p in c.panoramas]


def test_world_is_the_same_in_another_process():
    code = ("import hashlib; from geo_assets.demo.world import build_world; "
            "w = build_world(2, 'tiny'); "
            "print(hashlib.sha256(repr((w.images, w.panoramas)).encode()).hexdigest())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONHASHSEED": "12345"})
    w = build_world(2, "tiny")
    here = hashlib.sha256(repr((w.images, w.panoramas)).encode()).hexdigest()
    assert out.stdout.strip() == here


def test_unknown_preset_is_an_input_error():
    with pytest.raises(InputError, match="preset"):
        generate_world(0, "huge")


def test_demo_preset_size_and_spread(demo):
    assert 3000 <= len(demo.images) <= 4000
    assert 250 <= len(demo.panoramas) <= 300
    countries = {im.country for im in demo.images}
    assert len(countries) >= 30
    assert len({im.continent for im in demo.images}) >= 6


def test_tiny_preset_is_small():
    tiny = generate_world(0, "tiny")
    assert 150 <= len(tiny.images) <= 500
    assert 20 <= len(tiny.panoramas) <= 60


def test_every_image_lies_in_its_country(demo):
    isos = sorted({c.iso_a3 for c in demo.countries})
    lat, lon = demo.image_lat_lon
    where = locate_countries(lat, lon, isos)
    assert (where >= 0).all()
    assert [isos[k] for k in where] == [im.country for im in demo.images]
    p_where = locate_countries([p.lat for p in demo.panoramas],
                               [p.lon for p in demo.panoramas], isos)
    assert [isos[k] for k in p_where] == [p.country for p in demo.panoramas]


def test_coverage_is_clustered_with_empty_interiors(demo):
    lat, lon = demo.image_lat_lon
    occupied = set(points_to_cells(lat, lon, 8))
    # ~3,600 images fall into few level-8 cells (0.7 x 1.4 degrees): dense cities and roads.
    assert len(occupied) < len(demo.images) / 10
    busiest = Counter(points_to_cells(lat, lon, 8)).most_common(1)[0][1]
    assert busiest >= 50


def test_ids_and_fields_look_like_mapillary(demo):
    ids = [im.image_id for im in demo.images]
    assert len(set(ids)) == len(ids) and all(i.isdigit() and len(i) == 15 for i in ids)
    assert all(len(p.pano_id) == 22 for p in demo.panoramas)
    assert len({p.pano_id for p in demo.panoramas}) == len(demo.panoramas)
    assert all(p.copyright == "© Google" and len(p.date) == 7 and p.date[4] == "-"
               for p in demo.panoramas)
    assert all(1_400_000_000_000 < im.captured_at < 1_800_000_000_000 for im in demo.images)
    assert any(im.is_pano for im in demo.images) and not all(im.is_pano for im in demo.images)
    assert any(not im.has_computed_geometry for im in demo.images)


def test_sequences_are_ordered_walks(demo):
    for seq in demo.sequences.values():
        times = [im.captured_at for im in seq]
        assert times == sorted(times)
        lat = np.array([im.lat for im in seq])
        lon = np.array([im.lon for im in seq])
        step_deg = np.hypot(np.diff(lat), np.diff(lon) * np.cos(np.radians(lat[1:])))
        assert (step_deg < 0.001).all()  # consecutive frames are metres apart
        assert len({im.creator_username for im in seq}) == 1


def test_every_artefact_occurs_and_near_duplicates_repeat_their_predecessor(demo):
    kinds = Counter(im.artefact for im in demo.images)
    assert all(kinds[a] > 0 for a in ARTEFACTS)
    assert kinds[None] > 0.85 * len(demo.images)
    for seq in demo.sequences.values():
        for prev, im in pairwise(seq):
            if im.artefact == "near_duplicate":
                assert im.render_seed == prev.render_seed
                assert (im.lat, im.lon) == (prev.lat, prev.lon)
                assert im.noise_seed != prev.noise_seed


def _ceiling_by_counting(world, level):
    """Independent computation: best cell per (country, climate, urban) group, weighted."""
    per_group: dict[str, Counter] = {}
    for im in world.images:
        if im.artefact is None:
            per_group.setdefault((im.country, im.climate, im.urban), Counter())[
                points_to_cells([im.lat], [im.lon], level)[0]] += 1
    for p in world.panoramas:
        per_group.setdefault((p.country, p.climate, p.urban), Counter())[
            points_to_cells([p.lat], [p.lon], level)[0]] += 4
    best = sum(c.most_common(1)[0][1] for c in per_group.values())
    return best / sum(sum(c.values()) for c in per_group.values())


def test_accuracy_ceiling_matches_counting_and_falls_with_level(demo):
    ceilings = [demo.accuracy_ceiling(level) for level in (0, 1, 3, 5, 8, 10)]
    assert ceilings[0] == 1.0
    assert all(a >= b for a, b in pairwise(ceilings))
    assert 0.2 < ceilings[-1] < 0.9  # finer cells than the signal can tell apart
    assert demo.accuracy_ceiling(5) == pytest.approx(_ceiling_by_counting(demo, 5))
    assert 0 < demo.accuracy_ceiling(5, "streetview") <= 1
    with pytest.raises(InputError):
        demo.accuracy_ceiling(5, "flickr")


def test_panoramas_stand_beside_mapillary_frames(demo):
    """Probing Street View at Mapillary locations (radius 50 m) finds every panorama."""
    lat, lon = demo.image_lat_lon
    for p in demo.panoramas[::7]:
        metres = np.hypot(lat - p.lat, (lon - p.lon) * np.cos(np.radians(p.lat))) * 111_195.0
        assert metres.min() < 35


def test_summary_is_json_ready(demo):
    summary = json.loads(json.dumps(demo.summary(levels=(1, 5))))
    assert summary["mapillary_images"] == len(demo.images)
    assert summary["accuracy_ceiling"]["5"] == round(demo.accuracy_ceiling(5), 4)
    assert set(summary["artefacts"]) == set(ARTEFACTS)
    assert len(summary["countries"]) == len({c.iso_a3 for c in demo.countries})


def test_labelled_ceiling_is_the_best_group_only_answer(demo):
    """``labelled_ceiling`` on dataset ids and labels equals giving each signal group its most
    common label in the set, and no group-only rule does better."""
    from geo_assets.demo.world import signal_group

    items = [im for im in demo.images if im.artefact is None][:400]
    ids = [f"mapillary:{im.image_id}" for im in items]
    ids += [f"streetview:{p.pano_id}_90" for p in demo.panoramas[:50]]
    items += list(demo.panoramas[:50])
    labels = list(points_to_cells([i.lat for i in items], [i.lon for i in items], 5))
    ceiling = demo.labelled_ceiling(ids, labels)
    by_group: dict = {}
    for item, label in zip(items, labels):
        by_group.setdefault(signal_group(item), Counter())[label] += 1
    modal = {g: c.most_common(1)[0][0] for g, c in by_group.items()}
    assert ceiling == pytest.approx(np.mean([modal[signal_group(i)] == lab
                                             for i, lab in zip(items, labels)]))
    rng = np.random.default_rng(0)
    for _ in range(20):  # random group-only rules never beat it
        rule = {g: rng.choice(list(c)) for g, c in by_group.items()}
        assert np.mean([rule[signal_group(i)] == lab for i, lab in zip(items, labels)]) \
            <= ceiling
    with pytest.raises(InputError, match="not in the demo world"):
        demo.labelled_ceiling(["local:someone/photo"], [0])


def test_town_coverage_follows_the_presets_zipf_law(demo):
    from geo_assets.demo.world import PRESETS, town_shares

    assert np.allclose(town_shares(3, 2.0), np.array([1, 1 / 4, 1 / 9]) / (1 + 1 / 4 + 1 / 9))
    assert PRESETS["demo"].town_zipf_exponent == 2.0
    # town streets per town, by nearest centre: the first town holds most of its country's
    by_town: Counter = Counter()
    countries = {c.iso_a3: c for c in demo.countries}
    for im in demo.images:
        if im.urban:
            c = countries[im.country]
            d = np.hypot(np.subtract(c.city_lats, im.lat), np.subtract(c.city_lons, im.lon))
            by_town[int(np.argmin(d))] += 1
    assert by_town[0] > 2.5 * by_town[1] > 0
    # the same world with equal towns (the tiny preset's law) is another world
    equal = build_world(0, "demo", town_zipf_exponent=None)
    assert equal.images != demo.images


def test_clean_manifest_holds_the_images_a_crawl_keeps(demo):
    manifest = demo.clean_manifest()
    frames = [im for im in demo.images if im.artefact is None]
    assert manifest.height == len(frames) + 4 * len(demo.panoramas)
    assert manifest["image_id"].n_unique() == manifest.height
    assert all(demo.item_of(i) is not None for i in manifest["image_id"])
