"""Class-balanced thinning of the training stream and the augmentation presets."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from geo_assets.errors import InputError
from training.data import load_dataset_descriptor, make_loader
from training.sampling import augmentation, balance_stage, keep_probabilities


def level_file(tmp_path, n_train):
    path = tmp_path / "level_3.parquet"
    pq.write_table(pa.table({"class_index": list(range(len(n_train))), "n_train": n_train}),
                   path)
    return path


def test_keep_probabilities_thin_frequent_classes_only(tmp_path):
    keep = keep_probabilities(level_file(tmp_path, [400, 100, 25, 100]), power=1.0)
    assert keep.tolist() == pytest.approx([0.25, 1.0, 1.0, 1.0])
    half = keep_probabilities(level_file(tmp_path, [400, 100, 25, 100]), power=0.5)
    assert half.tolist() == pytest.approx([0.5, 1.0, 1.0, 1.0])


def test_balance_stage_evens_out_an_imbalanced_stream(tmp_path):
    keep = keep_probabilities(level_file(tmp_path, [7200, 900, 900]), power=1.0)
    label = lambda i: {0: 1, 1: 2}.get(i % 10, 0)  # 80 % class 0, 10 % each other
    stream = [{"__key__": str(i), "json": json.dumps({"labels": {"3": label(i)}})}
              for i in range(9000)]
    kept = Counter(json.loads(s["json"])["labels"]["3"] for s in balance_stage(
        keep, 3, lambda: 1)(iter(stream)))
    assert kept[1] == kept[2] == 900  # the rare classes keep everything
    assert 0.8 < kept[0] / kept[1] < 1.25  # the frequent one is thinned to about as many
    bad = [{"__key__": "x", "json": json.dumps({"labels": {"3": 7}})}]
    with pytest.raises(InputError, match="sample x: level 3 label 7"):
        list(balance_stage(keep, 3, lambda: 1)(iter(bad)))


def test_balanced_loader_thins_a_class_the_level_table_calls_frequent(tiny_dataset, tmp_path):
    """A copy of the tiny dataset whose finest level table says class 0 is 100x larger than
    the others: the balanced stream all but drops it, and epochs keep their length."""
    shutil.copytree(tiny_dataset / "datasets", tmp_path / "datasets")
    desc = load_dataset_descriptor(tmp_path / "datasets" / "dataset.json")
    finest = desc.levels[-1]
    table = pq.read_table(desc.level_files[finest])
    n_train = [1000 if i == 0 else 10 for i in table["class_index"].to_pylist()]
    pq.write_table(table.set_column(table.schema.get_field_index("n_train"), "n_train",
                                    pa.array(n_train, table["n_train"].type)),
                   desc.level_files[finest])

    def label_counts(balance: float) -> Counter:
        loader = make_loader(desc, "train", image_size=16, batch_size=8, num_workers=0,
                             epoch_samples=400, class_balance=balance, augment="strong")
        return Counter(int(x) for b in loader for x in b["labels_by_level"][finest])

    plain, balanced = label_counts(0.0), label_counts(1.0)
    assert sum(balanced.values()) == sum(plain.values())
    assert plain[0] > 20 and balanced[0] < plain[0] / 4


def test_augmentation_presets():
    assert augmentation("strong")["scale"][0] < augmentation("standard")["scale"][0]
    with pytest.raises(InputError, match="standard, strong"):
        augmentation("wild")
