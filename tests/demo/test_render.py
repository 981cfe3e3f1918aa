"""Rendering: real JPEGs, a location signal a model can learn, and artefacts filters catch."""

from __future__ import annotations

import io
from itertools import pairwise

import numpy as np
import pytest
from PIL import Image

from geo_assets.demo.render import RenderCache, render_image


def _decode(data: bytes) -> np.ndarray:
    im = Image.open(io.BytesIO(data))
    im.load()
    return np.asarray(im.convert("RGB"), dtype=np.float32)


def _features(world, images) -> np.ndarray:
    """A 16x12 colour thumbnail per image, flattened."""
    return np.stack([_decode(render_image(world, im, 64, 48))[::4, ::4].ravel()
                     for im in images])


@pytest.fixture(scope="module")
def clean(demo_world):
    return [im for im in demo_world.images if im.artefact is None]


def test_jpeg_of_requested_size_and_deterministic(demo_world, clean):
    im = clean[0]
    data = render_image(demo_world, im, 1024, 768)
    assert data[:2] == b"\xff\xd8" and data[-2:] == b"\xff\xd9"
    assert Image.open(io.BytesIO(data)).size == (1024, 768)
    assert 20_000 < len(data) < 400_000  # a realistic thumbnail, not a flat colour
    assert render_image(demo_world, im, 1024, 768) == data
    pano = demo_world.panoramas[0]
    assert Image.open(io.BytesIO(render_image(demo_world, pano, 640, 640, 90))).size == (640, 640)


def test_country_is_recognisable_from_pixels(demo_world, clean):
    """Nearest-centroid on tiny thumbnails, trained and tested on different sequences."""
    seqs = sorted({im.sequence_id for im in clean})
    test_seqs = set(seqs[::3])
    train = [im for im in clean if im.sequence_id not in test_seqs]
    test = [im for im in clean if im.sequence_id in test_seqs]
    countries = sorted({im.country for im in train})
    x_train, x_test = _features(demo_world, train), _features(demo_world, test)
    centroids = np.stack([x_train[[im.country == c for im in train]].mean(0)
                          for c in countries])
    dist = ((x_test[:, None, :] - centroids[None]) ** 2).sum(-1)
    predicted = [countries[k] for k in dist.argmin(1)]
    accuracy = np.mean([p == im.country for p, im in zip(predicted, test)])
    assert accuracy > 3.0 / len(countries)  # chance is 1 / len(countries)
    assert accuracy > 0.6


def test_one_place_is_similar_and_different_countries_differ(demo_world, clean):
    by_country: dict[str, list] = {}
    for im in clean:
        by_country.setdefault(im.country, []).append(im)
    a, b = sorted(by_country)[:2]
    seq = [im for im in by_country[a] if im.sequence_id == by_country[a][0].sequence_id][:6]
    other = by_country[b][:6]
    fa, fb = _features(demo_world, seq), _features(demo_world, other)
    within = np.abs(fa[:, None] - fa[None]).mean(-1)[np.triu_indices(len(fa), 1)].mean()
    across = np.abs(fa[:, None] - fb[None]).mean(-1).mean()
    assert across > 1.5 * within


def test_headings_show_different_views_of_one_pano(demo_world):
    """Turning by 90 degrees changes the view (looking back along a straight road may not)."""
    for pano in demo_world.panoramas[:4]:
        views = [_decode(render_image(demo_world, pano, 320, 320, h))
                 for h in (0, 90, 180, 270)]
        assert all(np.abs(a - b).mean() > 3 for a, b in pairwise(views + views[:1]))


def _mean_brightness(data: bytes) -> float:
    return float(_decode(data).mean())


def test_dark_and_overexposed_frames(demo_world):
    dark = [im for im in demo_world.images if im.artefact == "dark"][:5]
    bright = [im for im in demo_world.images if im.artefact == "overexposed"][:5]
    assert dark and bright
    assert all(_mean_brightness(render_image(demo_world, im, 256, 192)) < 20 for im in dark)
    assert all(_mean_brightness(render_image(demo_world, im, 256, 192)) > 235 for im in bright)
    normal = [im for im in demo_world.images if im.artefact is None][:5]
    assert all(40 < _mean_brightness(render_image(demo_world, im, 256, 192)) < 220
               for im in normal)


def test_near_duplicates_are_near_and_neighbours_are_not(demo_world):
    pairs, normal_pairs = [], []
    for seq in demo_world.sequences.values():
        for prev, im in pairwise(seq):
            if im.artefact == "near_duplicate":
                pairs.append((prev, im))
            elif im.artefact is None and prev.artefact is None:
                normal_pairs.append((prev, im))
    assert pairs

    def diff(p):
        return np.abs(_decode(render_image(demo_world, p[0], 256, 192))
                      - _decode(render_image(demo_world, p[1], 256, 192))).mean()

    dup = max(diff(p) for p in pairs[:5])
    neighbours = min(diff(p) for p in normal_pairs[:20])
    assert dup < 8 < neighbours


def test_corrupt_files_are_truncated_jpegs(demo_world):
    bad = [im for im in demo_world.images if im.artefact == "corrupt"]
    assert bad
    data = render_image(demo_world, bad[0], 1024, 768)
    assert data[:2] == b"\xff\xd8" and data[-2:] != b"\xff\xd9"
    with pytest.raises(OSError):
        _decode(data)


def test_render_cache_is_bounded_lru():
    cache = RenderCache(max_bytes=25)
    calls = []

    def make(k):
        return lambda: calls.append(k) or bytes(10)

    for k in (1, 2, 1, 3):
        cache.get_or_render((k,), make(k))
    assert calls == [1, 2, 3]  # the second 1 was a hit
    cache.get_or_render((2,), make(2))  # 2 was evicted as least recently used
    assert calls == [1, 2, 3, 2]
    assert (cache.hits, cache.misses) == (1, 4)


def _sign_pixels(rgb: np.ndarray, colour) -> int:
    return int((np.abs(rgb - np.asarray(colour, np.float32)).max(-1) < 25).sum())


@pytest.mark.parametrize("width,height", [(1024, 768), (640, 640)])
def test_the_sign_stands_inside_the_evaluation_crop(demo_world, clean, width, height):
    """The sign is a country cue in every view, so it must lie in what the model sees: the
    evaluation transform's centre crop (EVAL_CROP_RATIO of the short side). Only rows down to the
    lowest horizon are counted: kerb stones in the foreground may share the sign's colour."""
    from geo_assets.demo.style import country_style
    from training.data import EVAL_CROP_RATIO

    items = clean[:40] if width != height else list(demo_world.panoramas[:40])
    inside = 0
    for k, item in enumerate(items):
        heading = None if width != height else 90.0 * (k % 4)
        rgb = _decode(render_image(demo_world, item, width, height, heading))
        rgb = rgb[:int(0.56 * height)]
        side = round(min(width, height) * EVAL_CROP_RATIO)
        top, left = (height - side) // 2, (width - side) // 2
        colour = country_style(item.country, item.continent).sign
        whole = _sign_pixels(rgb, colour)
        crop = _sign_pixels(rgb[top:, left:left + side], colour)
        inside += whole > 0 and crop >= 0.9 * whole
    assert inside >= 0.9 * len(items)


def test_ground_plane_puts_the_road_where_a_camera_on_it_sees_it():
    """Along the road its direction is the middle column and depth grows toward the horizon;
    looking across it, a row of the frame is one distance from the road (a kerb is level)."""
    from geo_assets.demo.render import ground_plane

    u = np.linspace(0, 1, 9)[None, :]
    t = np.array([[0.25], [0.5], [1.0]])
    across, along = ground_plane(u, t, 0.0)
    assert np.allclose(across[:, 4], 0) and np.allclose(along[:, 4], [4, 2, 1])
    assert np.all(np.diff(across, axis=1) > 0)  # to the right of the road's direction
    across, along = ground_plane(u, t, 90.0)
    assert np.allclose(across, 1 / t) and np.allclose(along[:, 4], 0)
    across, _ = ground_plane(u, t, -90.0)
    assert np.allclose(across, -1 / t)


def test_a_view_across_the_road_shows_the_road_under_the_camera(demo_world):
    """A Street View camera stands on the road, so a heading across it toward the far side
    has the country's asphalt at the bottom of the frame, as a real panorama does."""
    from geo_assets.demo.render import road_bearing
    from geo_assets.demo.style import country_style

    for pano in demo_world.panoramas[:30]:
        style = country_style(pano.country, pano.continent)
        far_side = -90.0 if not style.left_side else 90.0  # the camera drives in its lane
        rgb = _decode(render_image(demo_world, pano, 320, 320,
                                   (road_bearing(pano) + far_side) % 360))
        patch = np.median(rgb[-12:, 128:192].reshape(-1, 3), axis=0)
        assert np.abs(patch - np.asarray(style.asphalt)).max() < 30, pano.pano_id
