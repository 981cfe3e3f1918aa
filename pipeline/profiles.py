"""Settings profiles: named overrides of the resources' defaults, keyed by resource name.

The defaults live in the schemas (``pipeline/resources.py``, ``training/config.py``); a profile
lists only what differs. ``demo`` is the built-in demo world on 2 CPUs: a small CNN at 64 px,
one compute thread and one loader worker, against the loopback demo server.
"""

from __future__ import annotations

DEMO_SEED = 0
DEMO_PRESET = "demo"
DEMO_CRAWL_LEVEL = 4  # 68 cells over the demo world's 36 countries, 39 with imagery

# The CPU demo's training: what differs from the GPU-minded defaults of TrainConfig. No early
# stopping (patience 0): the cosine schedule's last, low-lr epochs are where the finer levels
# improve, and best.pth still keeps the epoch with the lowest validation NLL.
DEMO_TRAINING = {
    "backbone": "tiny", "pretrained": False, "image_size": 64, "epochs": 30, "patience": 0,
    "lr": 3e-3, "threads": 1, "workers": 1, "checkpoint_every": 100,
}


# The demo world's towns are about 5 km across, so the default 10 km blocks (20 km once
# quantised to quadtree cells) hold a whole town out of training: a test of unseen towns, whose
# cells no model can know, not of the stated ceiling. 2 km blocks hold out streets, with the
# 1 km buffer between splits, as OSV-5M separates its test set.
DEMO_DATASET = {"block_km": 2.0}


def demo_region(seed: int, preset: str) -> str:
    """The countries the demo world has coverage in, as a region setting."""
    from geo_assets.demo.world import generate_world

    isos = sorted({country.iso_a3 for country in generate_world(seed, preset).countries})
    return "countries:" + ",".join(isos)


def demo_profile(seed: int = DEMO_SEED, preset: str = DEMO_PRESET) -> dict[str, dict]:
    """The demo world: Mapillary and Street View answered by a loopback server, crawled over
    the countries it covers. Its images are synthetic, so storing Street View's is allowed."""
    demo = {"demo_seed": seed, "demo_preset": preset, "requests_per_s": 0}
    return {
        "settings": {"region": demo_region(seed, preset), "crawl_level": DEMO_CRAWL_LEVEL,
                     "sources": ["mapillary", "streetview"], "images_per_cell": 300},
        "mapillary": demo,
        "streetview": {**demo, "max_lookups_per_cell": 60, "store_images_acknowledged": True},
        "dataset": DEMO_DATASET,
        "training": DEMO_TRAINING,
    }


# Profiles by name, for ``profile:`` in the settings file (pipeline/config_file.py).
PROFILES = {"demo": demo_profile}
