"""geoscout's geo and data library: plain Python, no Dagster import.

Each module holds one concept (grid cells, land filtering, API clients, image checks,
manifests, splits, shards) as functions that take data and return data.
"""

__version__ = "0.1.0"
