"""`geoscout demo`'s own logic (the whole run is too slow for the test suite; see README)."""

from __future__ import annotations

import pytest

from geo_assets.errors import InputError
from geo_assets.storage import DataRoot
from pipeline import demo_run


def test_a_data_root_holds_one_demo_world(tmp_path):
    root = DataRoot(str(tmp_path / "data"))
    demo_run._check_world(root, 0, "tiny")  # first run writes the marker
    demo_run._check_world(root, 0, "tiny")  # same world: fine
    with pytest.raises(InputError, match="--fresh"):
        demo_run._check_world(root, 1, "tiny")


def test_unknown_preset_is_rejected(capsys):
    with pytest.raises(SystemExit):
        demo_run.cli(["--preset", "huge"])
    assert "invalid choice" in capsys.readouterr().err
