"""Class tables of a hierarchical dataset: one table per level, linked child -> parent.

Read from ``datasets/hierarchy/level_<L>.parquet`` (see docs/architecture.md): ``class_index``,
``cell_id``, ``centroid_lat_deg``, ``centroid_lon_deg``, ``parent_class_index`` (-1 at the
first level). Stored inside ``model.pt`` as plain lists so a model file is self-contained.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch

from geo_assets.errors import InputError
from geo_assets.storage import is_url


@dataclass(frozen=True)
class LevelTable:
    level: int
    cell_ids: tuple[str, ...]
    centroids_deg: tuple[tuple[float, float], ...]
    parents: tuple[int, ...]

    @property
    def num_classes(self) -> int:
        return len(self.cell_ids)

    # Built once per table (inference calls these every batch); callers get a copy.
    @cached_property
    def _centroids(self) -> torch.Tensor:
        return torch.tensor(self.centroids_deg, dtype=torch.float64)

    @cached_property
    def _parents(self) -> torch.Tensor:
        return torch.tensor(self.parents, dtype=torch.long)

    def centroid_tensor(self) -> torch.Tensor:
        return self._centroids.clone()

    def parent_tensor(self) -> torch.Tensor:
        return self._parents.clone()


@dataclass(frozen=True)
class ClassTables:
    """Levels coarsest first."""

    levels: tuple[LevelTable, ...]

    @property
    def level_ids(self) -> list[int]:
        return [t.level for t in self.levels]

    @property
    def num_classes(self) -> list[int]:
        return [t.num_classes for t in self.levels]

    def to_dict(self) -> dict:
        return {"levels": [{"level": t.level, "cell_ids": list(t.cell_ids),
                            "centroids_deg": [list(c) for c in t.centroids_deg],
                            "parents": list(t.parents)} for t in self.levels]}

    @classmethod
    def from_dict(cls, data: dict) -> ClassTables:
        return cls(tuple(LevelTable(int(t["level"]), tuple(t["cell_ids"]),
                                    tuple(tuple(c) for c in t["centroids_deg"]),
                                    tuple(int(p) for p in t["parents"]))
                         for t in data["levels"]))

    def version(self) -> str:
        """Content hash of the tables (recorded in checkpoints and model cards)."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def ancestors(self, index: int) -> torch.Tensor:
        """(C_index, index + 1) class indices of each class's ancestor at every level <= index."""
        cols = [torch.arange(self.levels[index].num_classes)]
        for k in range(index, 0, -1):
            cols.append(self.levels[k].parent_tensor()[cols[-1]])
        return torch.stack(cols[::-1], dim=1)


LEVEL_TABLE_COLUMNS = ("class_index", "cell_id", "centroid_lat_deg", "centroid_lon_deg",
                       "parent_class_index")


def read_level_table(path: Path | str, level: int) -> LevelTable:
    """A level's class table from a local path or an fsspec URL (``s3://...``).

    A local file is opened by Arrow itself, not through a Python file object (with polars
    loaded that aborted the process at exit now and then; see ``DataRoot.parquet_file``).
    """
    import fsspec

    source = str(path)
    try:
        with fsspec.open(source, "rb") if is_url(source) else nullcontext(source) as f:
            table = pq.read_table(f, columns=list(LEVEL_TABLE_COLUMNS)).to_pydict()
    except FileNotFoundError:
        raise InputError(f"label map {path} is missing: build the dataset (hierarchy) "
                         "first") from None
    except (pa.ArrowException, OSError) as e:  # damaged file, or a column missing
        raise InputError(f"label map {path} is not a level table with columns "
                         f"{', '.join(LEVEL_TABLE_COLUMNS)}: {e}") from None
    order = sorted(range(len(table["class_index"])), key=lambda i: table["class_index"][i])
    if [table["class_index"][i] for i in order] != list(range(len(order))):
        raise InputError(f"{path}: class_index must be 0..C-1 without gaps")
    return LevelTable(
        level=level,
        cell_ids=tuple(str(table["cell_id"][i]) for i in order),
        centroids_deg=tuple((float(table["centroid_lat_deg"][i]),
                             float(table["centroid_lon_deg"][i])) for i in order),
        parents=tuple(int(table["parent_class_index"][i]) for i in order),
    )


def load_class_tables(level_paths: dict[int, Path]) -> ClassTables:
    """Tables for ``{level: path}``; checks that each parent index exists one level up."""
    tables = [read_level_table(p, lv) for lv, p in sorted(level_paths.items())]
    for upper, lower in itertools.pairwise(tables):
        bad = [p for p in lower.parents if not 0 <= p < upper.num_classes]
        if bad:
            raise InputError(f"level {lower.level} label map: parent_class_index {bad[0]} "
                             f"is not a class of level {upper.level}")
    return ClassTables(tuple(tables))
