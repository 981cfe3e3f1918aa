"""The model card records the exact per-cell manifest versions, in the form lineage reads."""

import json

import pyarrow as pa
import pyarrow.parquet as pq

from geo_assets.lineage import model_lineage
from geo_assets.storage import DataRoot
from training.outputs import cell_versions


def write_versions(root, versions: dict[str, str]) -> None:
    cells = sorted(versions)
    table = pa.table({"cell_id": cells, "source": ["mapillary"] * len(cells),
                      "version": [versions[c] for c in cells],
                      "n_rows": [3] * len(cells), "n_kept": [2] * len(cells)})
    pq.write_table(table, root / "manifests" / "cell_versions.parquet")


def test_card_cell_versions_are_what_lineage_compares(tmp_path):
    (tmp_path / "datasets").mkdir()
    (tmp_path / "manifests").mkdir()
    descriptor = tmp_path / "datasets" / "dataset.json"
    descriptor.write_text("{}")
    write_versions(tmp_path, {"0312": "v-b", "0311": "v-a"})

    rows, table_sha = cell_versions(descriptor)
    assert len(table_sha) == 64
    assert rows == [{"cell_id": "0311", "source": "mapillary", "version": "v-a"},
                    {"cell_id": "0312", "source": "mapillary", "version": "v-b"}]

    model_dir = tmp_path / "models" / "run"
    model_dir.mkdir(parents=True)
    (model_dir / "model_card.json").write_text(json.dumps(
        {"run_name": "run", "manifest_sha256": "m", "cell_versions": rows}))
    item = model_lineage(DataRoot(str(tmp_path)), "run")
    assert [(c["cell_id"], c["version"]) for c in item.cell_versions] == [
        ("0311", "v-a"), ("0312", "v-b")]
    assert not item.cells_changed

    write_versions(tmp_path, {"0312": "v-c", "0311": "v-a"})  # cell 0312 re-crawled since
    changed = model_lineage(DataRoot(str(tmp_path)), "run").cells_changed
    assert [c["cell_id"] for c in changed] == ["0312"]


def test_no_version_table_gives_no_rows(tmp_path):
    (tmp_path / "datasets").mkdir()
    assert cell_versions(tmp_path / "datasets" / "dataset.json") == ([], None)
