"""The per-cell resume journal survives a line torn by a crash."""

from __future__ import annotations

import json

from geo_assets.ingest import Journal


def test_torn_last_line_is_ignored_and_appends_start_on_a_new_line(tmp_path):
    path = tmp_path / "cell.journal.jsonl"
    good = {"image_id": "mapillary:1", "sha256": "ab" * 32}
    path.write_text(json.dumps(good) + "\n" + '{"image_id": "mapillary:2", "sha2')
    journal = Journal(path)
    assert list(journal.entries) == ["mapillary:1"]
    journal.append({"image_id": "mapillary:3", "sha256": None})
    journal._file.close()
    assert set(Journal(path).entries) == {"mapillary:1", "mapillary:3"}
    journal._file = None
    journal.remove()
    assert not path.exists()
