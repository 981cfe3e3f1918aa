"""The seeded demo world: Mapillary-style capture sequences and Street View panoramas.

Coverage is clustered the way real coverage is: dense cities (the biggest with the most
coverage), sequences along roads between them, nothing in the interiors. Street View panoramas stand beside Mapillary frames (both
services drive the same streets), so probing metadata at Mapillary locations finds them.
Everything is a pure function of ``(seed, preset)``.

What the pixels reveal is the image's *signal group*, (country, climate band, town or open
road): the renderer draws colours, road markings and signs per country, sky and vegetation per
climate band, and buildings in towns, so ``DemoWorld.accuracy_ceiling(level)`` is the best
accuracy any model can reach at a grid level.
"""

from __future__ import annotations

import dataclasses
import string
from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
import polars as pl

from geo_assets.cells import points_to_cells
from geo_assets.demo.places import (
    CLIMATE_BANDS,
    DemoCountry,
    choose_countries,
    climate_band,
    locate_countries,
)
from geo_assets.errors import InputError

ARTEFACTS: tuple[str, ...] = ("dark", "overexposed", "near_duplicate", "corrupt")
PANO_HEADINGS = 4  # Street View images per panorama counted by accuracy_ceiling

# Exponent of the Zipf law of town coverage. Street-level coverage is more concentrated than
# population (the capital's streets are driven and walked again and again), so it is steeper
# than the population law's 1. It also keeps the demo's split figures stable: with exponent 1,
# a group's most common cell at levels 5 and 8 often held barely more images than the next,
# so which streets a split held out flipped it, and the group oracle's share of the stated
# ceiling swung by 0.05-0.12 (standard deviation over split seeds; ``bench.demo_split_noise``).
TOWN_ZIPF_EXPONENT = 2.0


@dataclass(frozen=True)
class Preset:
    """Size of a world."""

    n_images: int
    n_panos: int
    seq_len: tuple[int, int]
    artefact_rates: tuple[float, float, float, float]  # in ARTEFACTS order
    city_spread_deg: float = 0.02  # std of a city street sequence's start around the centre
    # Exponent of the Zipf law of town coverage (``town_shares``); None: towns of equal
    # coverage, drawn as before Zipf's law (the tiny world's machinery tests depend on it)
    town_zipf_exponent: float | None = None


PRESETS: dict[str, Preset] = {
    "demo": Preset(3400, 288, (2, 3), (0.03, 0.02, 0.04, 0.01), 0.05,
                   town_zipf_exponent=TOWN_ZIPF_EXPONENT),
    # tiny: fast tests of the machinery, not of accuracy; equal towns as before Zipf's law
    "tiny": Preset(320, 40, (6, 16), (0.04, 0.03, 0.05, 0.02)),
}


@dataclass(frozen=True)
class DemoImage:
    """One Mapillary-style image. ``artefact`` is None or one of ``ARTEFACTS``."""

    image_id: str
    sequence_id: str
    creator_username: str
    creator_id: str
    captured_at: int  # epoch milliseconds
    compass_angle: float
    is_pano: bool
    quality_score: float
    lat: float
    lon: float
    altitude: float
    country: str  # iso_a3
    continent: str
    climate: str  # one of places.CLIMATE_BANDS
    urban: bool
    artefact: str | None
    render_seed: int  # near-duplicates share their predecessor's
    noise_seed: int
    has_computed_geometry: bool


@dataclass(frozen=True)
class DemoPano:
    """One Street View-style panorama; images can be rendered at any heading."""

    pano_id: str
    date: str  # "YYYY-MM"
    lat: float
    lon: float
    country: str
    continent: str
    climate: str
    urban: bool
    render_seed: int
    copyright: str = "© Google"


@dataclass(frozen=True)
class DemoWorld:
    """A generated world. Build it with ``generate_world``."""

    seed: int
    preset: str
    countries: tuple[DemoCountry, ...]
    images: tuple[DemoImage, ...]
    panoramas: tuple[DemoPano, ...]

    @cached_property
    def image_index(self) -> dict[str, DemoImage]:
        return {im.image_id: im for im in self.images}

    @cached_property
    def pano_index(self) -> dict[str, DemoPano]:
        return {p.pano_id: p for p in self.panoramas}

    @cached_property
    def sequences(self) -> dict[str, tuple[DemoImage, ...]]:
        """sequence_id -> its images in capture order."""
        out: dict[str, list[DemoImage]] = {}
        for im in self.images:
            out.setdefault(im.sequence_id, []).append(im)
        return {k: tuple(sorted(v, key=lambda im: im.captured_at)) for k, v in out.items()}

    @cached_property
    def image_lat_lon(self) -> tuple[np.ndarray, np.ndarray]:
        """(lat, lon) arrays in ``images`` order, for vectorised queries."""
        return (np.array([im.lat for im in self.images]),
                np.array([im.lon for im in self.images]))

    def accuracy_ceiling(self, level: int, source: str | None = None) -> float:
        """Best accuracy a model can reach at grid ``level`` from pixels alone.

        The fraction of (clean) images whose level-``level`` cell is the most common cell
        of their signal group (country x climate band x town/road). Images with an artefact
        are excluded (filters drop them); each panorama counts ``PANO_HEADINGS`` times.
        ``source`` is None (both), "mapillary" or "streetview".
        """
        lat, lon, groups, weights = self._signal_table(source)
        if len(lat) == 0:
            raise InputError(f"no images for source {source!r} in this world")
        per_cell: dict[tuple[str, str], float] = {}
        for group, cell, weight in zip(groups, points_to_cells(lat, lon, level), weights):
            per_cell[group, cell] = per_cell.get((group, cell), 0.0) + weight
        best: dict[str, float] = {}
        for (group, _), n in per_cell.items():
            best[group] = max(best.get(group, 0.0), n)
        return float(sum(best.values()) / weights.sum())

    def item_of(self, image_id: str) -> DemoImage | DemoPano | None:
        """The image or panorama behind a dataset image id (``mapillary:<id>`` or
        ``streetview:<pano>_<heading>``); None for an id that is not this world's."""
        source, _, key = image_id.partition(":")
        if source == "mapillary":
            return self.image_index.get(key)
        if source == "streetview":
            return self.pano_index.get(key.rsplit("_", 1)[0])
        return None

    def labelled_ceiling(self, image_ids, labels) -> float:
        """Best top-1 any model can reach on exactly these dataset images, from pixels alone.

        ``labels`` are the images' classes at one level of the dataset's hierarchy (which
        merges sparse cells into their parent's class). Pixels reveal only the signal group,
        so no model does better on this set than one that gives every image its group's most
        common label *in this set*. It is a hard bound for one split; a model trained on other
        places can reach it only where the split's places are like the training places.
        """
        counts: dict[tuple[str, object], int] = {}
        for image_id, label in zip(image_ids, labels, strict=True):
            item = self.item_of(image_id)
            if item is None:
                raise InputError(f"image {image_id!r} is not in the demo world (seed "
                                 f"{self.seed}, preset {self.preset!r})")
            key = (signal_group(item), label)
            counts[key] = counts.get(key, 0) + 1
        if not counts:
            raise InputError("no images to compute a ceiling on")
        best: dict[str, int] = {}
        for (group, _), n in counts.items():
            best[group] = max(best.get(group, 0), n)
        return sum(best.values()) / sum(counts.values())

    def summary(self, levels: tuple[int, ...] = (1, 3, 5, 8)) -> dict:
        """Counts and accuracy ceilings, JSON-ready (for reports and the CLI)."""
        artefacts: dict[str, int] = {}
        for im in self.images:
            if im.artefact:
                artefacts[im.artefact] = artefacts.get(im.artefact, 0) + 1
        return {
            "seed": self.seed, "preset": self.preset,
            "mapillary_images": len(self.images), "sequences": len(self.sequences),
            "streetview_panoramas": len(self.panoramas),
            "countries": sorted({im.country for im in self.images}),
            "continents": sorted({im.continent for im in self.images}),
            "artefacts": artefacts,
            "accuracy_ceiling": {str(level): round(self.accuracy_ceiling(level), 4)
                                 for level in levels},
        }

    def clean_manifest(self) -> pl.DataFrame:
        """The images a crawl of this world keeps, as manifest columns (``image_id``,
        ``source``, ``group_id``, ``lat_deg``, ``lon_deg``): the Mapillary frames without an
        artefact and every heading of every panorama."""
        rows = [(f"mapillary:{im.image_id}", "mapillary", im.sequence_id, im.lat, im.lon)
                for im in self.images if im.artefact is None]
        rows += [(f"streetview:{p.pano_id}_{h}", "streetview", p.pano_id, p.lat, p.lon)
                 for p in self.panoramas for h in range(PANO_HEADINGS)]
        return pl.DataFrame(rows, schema=["image_id", "source", "group_id", "lat_deg",
                                          "lon_deg"], orient="row")

    def _signal_table(self, source: str | None):
        """(lat, lon, signal group, weight) arrays of the images a model would see."""
        if source not in (None, "mapillary", "streetview"):
            raise InputError(f"source must be None, 'mapillary' or 'streetview', not {source!r}")
        items: list[tuple[DemoImage | DemoPano, float]] = []
        if source in (None, "mapillary"):
            items += [(im, 1.0) for im in self.images if im.artefact is None]
        if source in (None, "streetview"):
            items += [(p, float(PANO_HEADINGS)) for p in self.panoramas]
        return (np.array([it.lat for it, _ in items], dtype=float),
                np.array([it.lon for it, _ in items], dtype=float),
                [signal_group(it) for it, _ in items],
                np.array([w for _, w in items], dtype=float))


def signal_group(item: DemoImage | DemoPano) -> str:
    """What an image's pixels reveal about where it is: country, climate band, town or road."""
    return f"{item.country}/{item.climate}/{item.urban}"


@lru_cache(maxsize=8)
def generate_world(seed: int = 0, preset: str = "demo") -> DemoWorld:
    """The world for ``seed`` and ``preset`` ("demo" or "tiny"), built once per process."""
    return build_world(seed, preset)


def build_world(seed: int, preset: str, **changes) -> DemoWorld:
    """Build a world from scratch; a pure function of ``(seed, preset)``. ``changes`` replace
    fields of the preset (benches compare worlds that differ in one of them)."""
    if preset not in PRESETS:
        raise InputError(f"unknown demo preset {preset!r}: use one of {sorted(PRESETS)}")
    spec = dataclasses.replace(PRESETS[preset], **changes)
    rng = np.random.default_rng([int(seed), 7919])
    countries = choose_countries(preset, rng)
    images = _make_images(countries, spec, rng)
    panos = _make_panos(countries, images, spec.n_panos, rng)
    return DemoWorld(int(seed), preset, tuple(countries), images, panos)


# --- capture sequences ------------------------------------------------------------------------

def _random_id(rng: np.random.Generator, n: int, alphabet: str) -> str:
    return "".join(rng.choice(list(alphabet), size=n))


def _walk(rng, lat0, lon0, n, spacing_deg, heading0_deg, turn_prob):
    """A street walk: ``n`` points from (lat0, lon0), turning by 90 degrees now and then."""
    turns = rng.choice([-90.0, 0.0, 90.0], size=n,
                       p=[turn_prob / 2, 1 - turn_prob, turn_prob / 2])
    turns[0] = 0.0
    heading = (heading0_deg + np.cumsum(turns) + rng.normal(0, 2.0, n)) % 360.0
    step = spacing_deg * rng.uniform(0.7, 1.3, n)
    rad = np.radians(heading)
    dlat = step * np.cos(rad)
    dlon = step * np.sin(rad) / max(np.cos(np.radians(lat0)), 0.2)
    lat = lat0 + np.concatenate([[0.0], np.cumsum(dlat[:-1])])
    lon = lon0 + np.concatenate([[0.0], np.cumsum(dlon[:-1])])
    return lat, lon, heading


def town_shares(n: int, exponent: float = TOWN_ZIPF_EXPONENT) -> np.ndarray:
    """Share of a country's sequences that start in each of its ``n`` towns: Zipf's law of
    town sizes (exponent 2: the first town four times the second, nine times the third), as
    real coverage is dominated by the biggest cities. Towns of equal size would make a group's
    most common cell a coin toss that any held-out split turns against itself."""
    sizes = 1.0 / np.arange(1, n + 1) ** exponent
    return sizes / sizes.sum()


def _sequence_track(country: DemoCountry, n: int, rng, spread_deg: float = 0.02,
                    zipf_exponent: float | None = None):
    """(lat, lon, compass, urban) of one sequence: a city street or a road between cities."""
    towns = len(country.city_lats)
    k = int(rng.integers(towns) if zipf_exponent is None
            else rng.choice(towns, p=town_shares(towns, zipf_exponent)))
    lat_c, lon_c = country.city_lats[k], country.city_lons[k]
    if len(country.city_lats) > 1 and rng.random() < 0.3:
        j = (k + 1 + int(rng.integers(len(country.city_lats) - 1))) % len(country.city_lats)
        t = rng.uniform(0.15, 0.85)
        lat0 = lat_c + t * (country.city_lats[j] - lat_c)
        lon0 = lon_c + t * (country.city_lons[j] - lon_c)
        bearing = np.degrees(np.arctan2(country.city_lons[j] - lon_c, country.city_lats[j] - lat_c))
        lat, lon, heading = _walk(rng, lat0, lon0, n, 3e-4, bearing, 0.0)
        return lat, lon, heading, False
    lat0 = lat_c + rng.normal(0, spread_deg)
    lon0 = lon_c + rng.normal(0, spread_deg)
    grid = rng.uniform(0, 90) + 90.0 * rng.integers(4)
    lat, lon, heading = _walk(rng, lat0, lon0, n, 1.5e-4, grid, 0.08)
    return lat, lon, heading, True


def _creators(countries, rng) -> list[list[tuple[str, str]]]:
    """Per country, two local (username, id) creators."""
    out = []
    for c in countries:
        names = [f"{c.iso_a3.lower()}_{_random_id(rng, 6, string.ascii_lowercase)}"
                 for _ in range(2)]
        out.append([(n, str(int(rng.integers(10**14, 10**15)))) for n in names])
    return out


def _make_sequences(countries, preset: Preset, rng) -> list[dict]:
    """Raw sequences (dict of arrays) until every country has its share of images."""
    creators = _creators(countries, rng)
    per_country = preset.n_images / len(countries)
    seqs = []
    for ci, country in enumerate(countries):
        made = 0
        while made < per_country:
            n = int(rng.integers(preset.seq_len[0], preset.seq_len[1] + 1))
            lat, lon, heading, urban = _sequence_track(country, n, rng,
                                                       preset.city_spread_deg,
                                                       preset.town_zipf_exponent)
            user, user_id = creators[ci][int(rng.integers(2))]
            start_ms = int(rng.integers(1_451_606_400_000, 1_735_603_200_000))
            gaps = rng.integers(800, 3000, n)
            gaps[0] = 0
            seqs.append({
                "sequence_id": _random_id(rng, 22, string.ascii_lowercase + string.digits),
                "lat": lat, "lon": lon, "heading": heading, "urban": urban,
                "captured_at": start_ms + np.cumsum(gaps), "user": user, "user_id": user_id,
                "is_pano": bool(rng.random() < 0.08),
                "altitude": float(rng.uniform(5, 1500)),
            })
            made += n
    return seqs


def _artefacts(n: int, rates, rng) -> list[str | None]:
    """Artefact per frame of a sequence; a near-duplicate never starts a sequence."""
    u = rng.random(n)
    edges = np.cumsum(rates)
    kind = np.searchsorted(edges, u, side="right")
    out: list[str | None] = [ARTEFACTS[k] if k < len(ARTEFACTS) else None for k in kind]
    for i, a in enumerate(out):
        if a == "near_duplicate" and (i == 0 or out[i - 1] is not None):
            out[i] = None
    return out


def _make_images(countries, preset: Preset, rng) -> tuple[DemoImage, ...]:
    seqs = _make_sequences(countries, preset, rng)
    isos = [c.iso_a3 for c in countries]
    all_lat = np.concatenate([s["lat"] for s in seqs])
    all_lon = np.concatenate([s["lon"] for s in seqs])
    where = locate_countries(all_lat, all_lon, isos)
    bands = climate_band(all_lat)
    ids = rng.choice(9 * 10**14, size=len(all_lat), replace=False) + 10**14
    images: list[DemoImage] = []
    pos = 0
    for s in seqs:
        n = len(s["lat"])
        arte = _artefacts(n, preset.artefact_rates, rng)
        seeds = rng.integers(0, 2**31, n)
        prev_seed = None
        for i in range(n):
            k = pos + i
            render_seed = prev_seed if arte[i] == "near_duplicate" else int(seeds[i])
            prev_seed = render_seed
            if where[k] < 0:
                continue  # off land or outside the demo countries
            country = countries[where[k]]
            images.append(_image_record(s, i, arte[i], str(int(ids[k])), country,
                                        CLIMATE_BANDS[bands[k]], render_seed, rng))
        pos += n
    return tuple(images)


def _image_record(s, i, artefact, image_id, country, climate, render_seed, rng) -> DemoImage:
    j = i - 1 if artefact == "near_duplicate" else i  # a near-duplicate: the camera stood still
    lat, lon, heading = float(s["lat"][j]), float(s["lon"][j]), float(s["heading"][j])
    dark = artefact in ("dark", "overexposed")
    return DemoImage(
        image_id=image_id, sequence_id=s["sequence_id"], creator_username=s["user"],
        creator_id=s["user_id"], captured_at=int(s["captured_at"][i]),
        compass_angle=round(heading, 2), is_pano=s["is_pano"],
        quality_score=float(rng.uniform(0.1, 0.4) if dark else rng.uniform(0.55, 1.0)),
        lat=lat, lon=lon, altitude=round(s["altitude"] + float(rng.normal(0, 2)), 3),
        country=country.iso_a3, continent=country.continent, climate=climate,
        urban=s["urban"], artefact=artefact, render_seed=render_seed,
        noise_seed=int(rng.integers(0, 2**31)), has_computed_geometry=bool(rng.random() > 0.06))


# --- Street View panoramas --------------------------------------------------------------------

def _pano_sites(countries, images, per_country: int, rng):
    """(lat, lon, urban) of panoramas: beside Mapillary frames, a few per sequence at most,
    since both services drive the same streets."""
    lats, lons, urban = [], [], []
    for c in countries:
        frames = [im for im in images if im.country == c.iso_a3]
        picks = rng.choice(len(frames), size=min(per_country, len(frames)), replace=False)
        for i in sorted(picks):
            im = frames[i]
            metres = rng.uniform(5, 30)
            bearing = np.radians(im.compass_angle + rng.choice([-90.0, 90.0]))
            lats.append(im.lat + metres * np.cos(bearing) / 111_195.0)
            lons.append(im.lon + metres * np.sin(bearing) / (111_195.0 * np.cos(
                np.radians(im.lat))))
            urban.append(im.urban)
    return np.array(lats), np.array(lons), np.array(urban, dtype=bool)


def _make_panos(countries, images, n_panos: int, rng) -> tuple[DemoPano, ...]:
    per_country = max(1, round(n_panos / len(countries)))
    lat, lon, urban = _pano_sites(countries, images, per_country, rng)
    where = locate_countries(lat, lon, [c.iso_a3 for c in countries])
    bands = climate_band(lat)
    alphabet = string.ascii_letters + string.digits + "-_"
    panos = []
    for k in np.flatnonzero(where >= 0):
        country = countries[where[k]]
        panos.append(DemoPano(
            pano_id=_random_id(rng, 22, alphabet),
            date=f"{int(rng.integers(2008, 2025))}-{int(rng.integers(1, 13)):02d}",
            lat=float(lat[k]), lon=float(lon[k]), country=country.iso_a3,
            continent=country.continent, climate=CLIMATE_BANDS[bands[k]],
            urban=bool(urban[k]), render_seed=int(rng.integers(0, 2**31))))
    return tuple(panos)
