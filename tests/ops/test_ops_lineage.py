"""Lineage over a data root built to the geo_assets.layout contract, and its CLI."""

from __future__ import annotations

import json

import pytest

from geo_assets import layout, lineage
from geo_assets.errors import InputError
from pipeline.cli import main

from . import ops_data


@pytest.fixture
def built(data_root):
    return ops_data.build(data_root)


def _first(built, pred):
    return next(r for r in built.rows if pred(r))


def test_image_lineage_lists_dataset_split_shard_and_models(built):
    row = built.shards["train-1-000000"][0]
    half = set(built.models["run-b"])
    item = lineage.image_lineage(built.root, row)
    assert item.manifest["cell_id"] == row.split(":")[1][:4]
    assert item.manifest["kept"] is True
    assert item.cell_version["cell_id"] == item.manifest["cell_id"]
    assert len(item.cell_version["version"]) == 64
    assert item.split == {"split": "train", "fold": 1, "group_id": item.manifest["group_id"]}
    assert item.shard == "train-1-000000"
    assert item.dataset["manifest_sha256"] == built.manifest_sha256
    assert item.dataset_versions == [built.manifest_sha256]
    expected = {"run-a"} | ({"run-b"} if row in half else set())
    assert {m.name for m in item.models} == expected
    assert all(m.role == "train" for m in item.models)


def test_test_image_shows_the_models_evaluated_on_it(built):
    test_id = built.shards["test-t-000000"][0]
    item = lineage.image_lineage(built.root, test_id)
    assert item.split["split"] == "test" and item.split["fold"] == -1
    assert item.shard == "test-t-000000"
    assert {(m.name, m.role) for m in item.models} == {("run-a", "test"), ("run-b", "test")}


def test_dropped_image_has_no_split_or_models(built):
    dropped = _first(built, lambda r: not r["kept"])
    item = lineage.image_lineage(built.root, dropped["image_id"])
    assert item.manifest["drop_reason"] == "too_dark"
    assert item.split is None and item.shard is None and item.models == []


def test_unknown_image_is_a_clear_error(built):
    with pytest.raises(InputError, match="mapillary:nope"):
        lineage.image_lineage(built.root, "mapillary:nope")


def test_model_lineage_reports_inputs_and_cells_changed_since(built):
    item = lineage.model_lineage(built.root, "run-b")
    assert item.manifest_sha256 == built.manifest_sha256 and item.manifest_current is True
    assert [c["cell_id"] for c in item.cell_versions] == list(ops_data.CELLS)
    assert item.cells_changed == []
    assert {s["name"] for s in item.shards} == {"train-0-000000", "train-1-000000"}
    assert item.n_train_images == len(built.models["run-b"]) and item.sources == {
        "mapillary": len(built.models["run-b"])}
    assert item.dagster_run_id is None  # run-b was trained outside Dagster
    assert lineage.model_lineage(built.root, "run-a").dagster_run_id == "11111111-aaaa"
    assert item.split == ops_data.SPLIT_SETTINGS and item.config["epochs"] == 1
    # A cell is re-crawled: its version changes and the model no longer matches the root.
    import pyarrow as pa
    import pyarrow.parquet as pq

    versions = pq.read_table(built.root.local_path(layout.CELL_VERSIONS)).to_pylist()
    versions[0]["version"] = "f" * 64
    pq.write_table(pa.Table.from_pylist(versions), built.root.local_path(layout.CELL_VERSIONS))
    built.root.write_bytes(layout.IMAGE_MANIFEST, b"changed")
    item = lineage.model_lineage(built.root, str(built.root.local_path(layout.model_dir("run-b"))))
    assert item.manifest_current is False
    assert [(c["cell_id"], c["version_now"]) for c in item.cells_changed] == [
        (ops_data.CELLS[0], "f" * 64)]


def test_fake_cards_carry_exactly_the_model_card_keys(built):
    from geo_assets import model_card as mc

    keys = {value for name, value in vars(mc).items() if name.isupper()}
    for run in built.models:
        card = json.loads(built.root.read_bytes(
            f"{layout.model_dir(run)}/{layout.MODEL_CARD_FILE}"))
        assert set(card) == keys


def test_unknown_model_lists_the_known_ones(built):
    with pytest.raises(InputError, match="run-a, run-b"):
        lineage.model_lineage(built.root, "run-zzz")


def test_cli_text_and_json(built, capsys):
    image_id = built.models["run-b"][0]
    assert main(["lineage", "--data-root", built.root.url, "image", image_id]) == 0
    out = capsys.readouterr().out
    assert f"image {image_id}" in out and "run-a" in out and "run-b" in out
    assert "train-" in out and built.manifest_sha256[:12] in out

    assert main(["lineage", "model", "run-a", "--data-root", built.root.url, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["name"] == "run-a" and data["n_train_images"] == len(built.models["run-a"])
    assert data["manifest_sha256"] == built.manifest_sha256
    assert data["dagster_run_id"] == "11111111-aaaa"
    assert main(["lineage", "model", "run-b", "--data-root", built.root.url]) == 0
    out = capsys.readouterr().out
    assert "model run-b" in out and "dagster run  -" in out

    assert main(["lineage", "--data-root", built.root.url, "image", "local:missing"]) == 2
    assert "local:missing" in capsys.readouterr().err


def test_shard_found_from_tar_headers_without_contents_table(built):
    built.root.local_path(layout.in_datasets(layout.SHARD_CONTENTS)).unlink()
    for name, ids in built.shards.items():
        assert lineage.image_lineage(built.root, ids[-1]).shard == name


def test_cli_default_root_matches_the_resources(monkeypatch, tmp_path):
    from geo_assets.storage import default_data_root
    from pipeline.resources import GeoscoutSettings

    monkeypatch.delenv("GEOSCOUT_DATA_ROOT", raising=False)
    assert GeoscoutSettings().data_root == default_data_root()
    assert default_data_root().endswith(".geoscout/data")
    monkeypatch.setenv("GEOSCOUT_DATA_ROOT", str(tmp_path))
    assert GeoscoutSettings().data_root == default_data_root() == str(tmp_path)


def test_damaged_card_is_a_clear_error(built):
    built.root.write_bytes(f"{layout.model_dir('run-b')}/{layout.MODEL_CARD_FILE}", b"{not json")
    with pytest.raises(InputError, match="run-b/model_card.json is not valid JSON"):
        lineage.model_lineage(built.root, "run-b")
