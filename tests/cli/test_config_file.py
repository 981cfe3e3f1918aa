"""The settings file: validated on load (errors name file, key, allowed values), secrets only
from the environment, read by the definitions, sensors and jobs; run config overrides only
the fields it gives."""

from __future__ import annotations

import textwrap

import dagster as dg
import pytest

from geo_assets.errors import InputError
from pipeline.config_file import config_path, file_resources, load_overrides
from pipeline.definitions import build_definitions
from pipeline.resources import TrainingSettings


def write(tmp_path, text: str):
    path = tmp_path / "geoscout.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_found_in_cwd_or_env(tmp_path, monkeypatch):
    monkeypatch.delenv("GEOSCOUT_CONFIG", raising=False)
    assert config_path(tmp_path) is None
    path = write(tmp_path, "settings: {crawl_level: 3}\n")
    assert config_path(tmp_path) == path
    monkeypatch.setenv("GEOSCOUT_CONFIG", str(tmp_path / "other.yaml"))
    with pytest.raises(InputError, match="GEOSCOUT_CONFIG=.*other.yaml"):
        config_path(tmp_path)


@pytest.mark.parametrize("text, message", [
    ("setings: {}\n", (r"geoscout.yaml: unknown key 'setings' \(did you mean 'settings'\?\)"
                      r".*allowed top-level keys: dataset, local_folder")),
    ("settings: {crawl_levle: 3}\n", (r"settings.crawl_levle: unknown setting \(did you mean "
                                     r"'crawl_level'\?\)")),
    ("training: {amp: maybe}\n", r"training.amp: .*got 'maybe'.*allowed: 'auto'"),
    ("dataset: {levels: [1, x]}\n", r"dataset.levels.1: .*integer"),
    ("profile: prod\n", r"profile: 'prod' is not a profile; allowed: demo"),
    ("mapillary: {access_token: MLY|123}\n", (r"mapillary.access_token is a secret: write "
                                             r"\{env: VARIABLE\}")),
    ("- a\n- b\n", r"expected a mapping"),
])
def test_errors_name_file_key_and_allowed_values(tmp_path, text, message):
    with pytest.raises(InputError, match=message) as info:
        load_overrides(write(tmp_path, text))
    assert str(tmp_path / "geoscout.yaml") in str(info.value)
    assert "MLY|123" not in str(info.value)  # a secret never reaches an error text


def test_profile_then_file_and_secrets_from_env(tmp_path):
    path = write(tmp_path, """
        profile: demo
        settings: {crawl_level: 3, sources: [mapillary]}
        mapillary: {access_token: {env: MY_TOKEN}, demo_seed: null}
        training: {epochs: 2}
        """)
    overrides = load_overrides(path)
    assert overrides["settings"]["crawl_level"] == 3
    assert overrides["settings"]["region"].startswith("countries:")  # from the profile
    assert overrides["training"]["epochs"] == 2
    assert overrides["training"]["backbone"] == "tiny"                  # from the profile
    token = overrides["mapillary"]["access_token"]
    assert isinstance(token, dg.EnvVar) and token.env_var_name == "MY_TOKEN"


def test_definitions_follow_the_file(tmp_path, monkeypatch):
    """Levels give the dataset_level_<L> assets; a real API's sensors start stopped; the
    crawl sensor sees the file's crawl level."""
    path = write(tmp_path, f"""
        settings: {{data_root: {tmp_path / 'data'}, crawl_level: 3, sources: [mapillary]}}
        mapillary: {{access_token: {{env: MY_TOKEN}}}}
        dataset: {{levels: [1, 2, 3]}}
        """)
    monkeypatch.setenv("GEOSCOUT_CONFIG", str(path))
    defs = build_definitions()
    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {k for k in keys if k.startswith("dataset_level_")} == {
        "dataset_level_1", "dataset_level_2", "dataset_level_3"}
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey("dataset_level_2")).group_name == "dataset"
    dataset_job = defs.resolve_job_def("dataset_job")
    assert "dataset_level_2" in {k.to_user_string() for k in dataset_job.asset_layer.executable_asset_keys}
    for name in ("crawl_cells_sensor", "geoscout_automation"):
        assert defs.resolve_sensor_def(name).default_status == dg.DefaultSensorStatus.STOPPED
    assert defs.resources["settings"].crawl_level == 3
    dg.Definitions.validate_loadable(defs)


def test_demo_or_local_sensors_start_running(tmp_path, monkeypatch):
    path = write(tmp_path, "settings: {sources: [local]}\nlocal_folder: {folder: /tmp}\n")
    monkeypatch.setenv("GEOSCOUT_CONFIG", str(path))
    defs = build_definitions()
    assert defs.resolve_sensor_def("crawl_cells_sensor").default_status == (
        dg.DefaultSensorStatus.RUNNING)


def test_run_config_overrides_only_given_fields(tmp_path):
    """Overriding ``workers`` at launch keeps the file's ``run_name`` (it used to reset to
    ``default``, and evaluation then looked for the wrong model)."""
    resources = file_resources(write(tmp_path, "training: {run_name: mine, workers: 1}\n"))
    seen = {}

    @dg.asset
    def probe(training: TrainingSettings) -> None:
        seen.update(run_name=training.run_name, workers=training.workers)

    run_config = {"resources": {"training": {"config": {"workers": 3}}}}
    assert dg.materialize([probe], resources={"training": resources["training"]},
                          run_config=run_config).success
    assert seen == {"run_name": "mine", "workers": 3}
