"""``geoscout init`` writes a commented starter file per preset that the loader accepts."""

from __future__ import annotations

import pytest

from pipeline.cli import main
from pipeline.commands.init import PRESETS
from pipeline.config_file import load_overrides


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_init_writes_a_file_that_loads(tmp_path, preset):
    path = tmp_path / "geoscout.yaml"
    assert main(["init", "--preset", preset, "--path", str(path)]) == 0
    text = path.read_text()
    assert text.startswith("# geoscout settings")
    overrides = load_overrides(path)
    assert overrides["settings"]["data_root"]
    assert main(["init", "--preset", preset, "--path", str(path)]) == 2  # no overwrite
    assert main(["init", "--preset", preset, "--path", str(path), "--force"]) == 0


def test_secrets_in_presets_come_from_env(tmp_path):
    path = tmp_path / "g.yaml"
    assert main(["init", "--preset", "streetview", "--path", str(path)]) == 0
    overrides = load_overrides(path)
    assert overrides["streetview"]["api_key"].env_var_name == "GOOGLE_MAPS_API_KEY"


def test_local_preset_lists_every_filter_with_its_default(tmp_path):
    """Uncommenting the local preset's filter lines gives a valid file with the defaults."""
    import dataclasses

    from geo_assets.settings import FilterSettings

    path = tmp_path / "geoscout.yaml"
    assert main(["init", "--preset", "local", "--path", str(path)]) == 0
    path.write_text(path.read_text().replace("  # filter_", "  filter_"))
    settings = load_overrides(path)["settings"]
    assert {k.removeprefix("filter_"): v for k, v in settings.items()
            if k.startswith("filter_")} == dataclasses.asdict(FilterSettings())
