"""Atomic checkpoints, RNG round trips, label-map validation and the CLI's flags."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from geo_assets.errors import InputError
from training import checkpoint as ckpt
from training.distributed import RankFilter
from training.hierarchy import load_class_tables
from training.train import get_args_parser


def test_atomic_save_leaves_no_half_file(tmp_path):
    target = tmp_path / "checkpoint.pth"
    ckpt.atomic_save({"step": 1}, target)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        ckpt.atomic_save({"step": 2, "bad": Unpicklable()}, target)
    assert ckpt.load(target) == {"step": 1}  # the old checkpoint survives intact
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pth"]


def test_rng_state_round_trip():
    ckpt.seed_everything(5)
    state = ckpt.rng_state()
    first = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    ckpt.set_rng_state(state)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == first


def write_level(path, parents):
    n = len(parents)
    pq.write_table(pa.table({"class_index": list(range(n)), "cell_id": [str(i) for i in range(n)],
                             "n_images": [1] * n, "n_train": [1] * n,
                             "centroid_lat_deg": [0.0] * n, "centroid_lon_deg": [0.0] * n,
                             "parent_class_index": parents}), path)


def test_label_maps_are_validated(tmp_path):
    write_level(tmp_path / "a.parquet", [-1, -1])
    write_level(tmp_path / "b.parquet", [0, 1, 2])
    with pytest.raises(InputError, match="parent_class_index 2 is not a class of level 1"):
        load_class_tables({1: tmp_path / "a.parquet", 3: tmp_path / "b.parquet"})
    with pytest.raises(InputError, match="missing"):
        load_class_tables({1: tmp_path / "none.parquet"})


def test_damaged_or_foreign_label_maps_are_clear_errors(tmp_path):
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match=r"label map .*junk.parquet is not a level table"):
        load_class_tables({1: tmp_path / "junk.parquet"})
    pq.write_table(pa.table({"class_index": [0], "cell_id": ["0"]}), tmp_path / "thin.parquet")
    with pytest.raises(InputError, match=r"thin.parquet is not a level table .*parent_class_index"):
        load_class_tables({1: tmp_path / "thin.parquet"})
    write_level(tmp_path / "good.parquet", [-1, -1])
    tables = load_class_tables({1: f"file://{tmp_path / 'good.parquet'}"})  # an fsspec URL
    assert tables.levels[0].num_classes == 2


def test_rank_filter_lets_only_rank_zero_through():
    import logging

    record = logging.LogRecord("geoscout", logging.INFO, __file__, 1, "x", None, None)
    assert RankFilter(0).filter(record)
    assert not RankFilter(1).filter(record)
    record.all_ranks = True
    assert RankFilter(1).filter(record)


def test_cli_flags_are_dash_case_with_defaults_in_help():
    parser = get_args_parser()
    text = parser.format_help()
    assert "--clip-grad-norm" in text and "(default: 1.0)" in text
    assert "--haversine-tau-km" in text and "--checkpoint-every" in text
    args = parser.parse_args(["--dataset", "d", "--output-dir", "o", "--wd", "0.1"])
    assert args.weight_decay == 0.1
    with pytest.raises(SystemExit):
        parser.parse_args(["--dataset", "d", "--output-dir", "o", "--opt", "rmsprop"])
