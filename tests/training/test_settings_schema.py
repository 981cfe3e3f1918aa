"""Every training default comes from one schema, ``training.config.TrainConfig``: the training
CLI's parser, the Dagster ``training`` resource and the demo profile all follow it."""

from __future__ import annotations

import argparse

import pytest
from pydantic import Field

import training.config
from pipeline.profiles import DEMO_TRAINING
from training.config import PER_RUN_FIELDS, TrainConfig, add_config_flags, from_namespace, to_argv


def parse(argv: list[str]) -> TrainConfig:
    parser = argparse.ArgumentParser()
    add_config_flags(parser)
    return from_namespace(parser.parse_args(["--dataset", "d", "--output-dir", "o", *argv]))


def test_parser_resource_and_profile_defaults_are_the_schema_defaults():
    from pipeline.resources import TrainingSettings

    parsed = parse([])
    resource = TrainingSettings()
    for name, info in TrainConfig.model_fields.items():
        if info.is_required():
            continue
        assert getattr(parsed, name) == info.default, name
        if name not in PER_RUN_FIELDS:
            assert getattr(resource, name) == info.default, name
            assert TrainingSettings.model_fields[name].description == info.description
    # the resource's flags parse back into the same settings
    argv = resource.train_args("d", "o")
    assert parse(argv[4:]) == parse([])
    # the demo profile overrides only fields of the schema, and only those it names
    assert set(DEMO_TRAINING) <= set(TrainConfig.model_fields)
    demo = TrainingSettings(**DEMO_TRAINING)
    demo_cfg = parse(demo.train_args("d", "o")[4:])
    for name in TrainConfig.model_fields:
        want = DEMO_TRAINING.get(name, TrainConfig.model_fields[name].default)
        if not TrainConfig.model_fields[name].is_required():
            assert getattr(demo_cfg, name) == want, name


def test_production_defaults_suit_a_gpu_user():
    cfg = parse([])
    assert (cfg.backbone, cfg.pretrained, cfg.image_size) == ("resnet50", True, 224)
    assert cfg.amp == "auto" and cfg.amp_dtype == "bfloat16" and cfg.workers is None
    assert cfg.loader_workers() >= 1


def test_changing_a_schema_default_changes_parser_resource_and_profile():
    """A schema whose image_size default is 288: the parser, the resource class built from it
    and the demo profile minus its own image_size all take 288."""
    from pipeline.resources import training_settings_class

    class Patched(TrainConfig):
        image_size: int = Field(default=288, ge=16, le=4096, description="input side",
                                json_schema_extra={"group": "data"})

    parser = argparse.ArgumentParser()
    add_config_flags(parser, Patched)
    assert parser.parse_args(["--dataset", "d", "--output-dir", "o"]).image_size == 288
    resource_cls = training_settings_class(Patched)
    assert resource_cls().image_size == 288
    profile = {k: v for k, v in DEMO_TRAINING.items() if k != "image_size"}
    assert resource_cls(**profile).image_size == 288
    assert "--image-size" in resource_cls(**profile).train_args("d", "o")
    assert parse([]).image_size == TrainConfig.model_fields["image_size"].default == 224


def test_to_argv_round_trips_every_kind_of_field():
    values = {"train_folds": [1, 2], "level_weights": [1.0, 0.5], "pretrained": False,
              "calibrate": False, "threads": 3, "haversine_tau_km": "auto", "opt": "sgd"}
    cfg = parse(to_argv(values))
    for name, value in values.items():
        assert getattr(cfg, name) == value


def test_unknown_values_are_refused_with_the_choices():
    with pytest.raises(SystemExit):
        parse(["--opt", "rmsprop"])
    with pytest.raises(Exception, match="backbone.*choose one of.*timm"):
        parse(["--backbone", "vgg"])  # not a timm name either (vgg16 would be)
    with pytest.raises(Exception, match="backbone"):
        TrainConfig(dataset="d", output_dir="o", backbone="vgg")
    assert TrainConfig(dataset="d", output_dir="o", backbone="convnext_atto").backbone
    assert "resnet50" in training.config.BACKBONES


def test_library_schemas_feed_the_dagster_resources():
    """The dataset and ingestion resources take their defaults and descriptions from the
    library's settings dataclasses (geo_assets/settings.py), and give the dataclasses back."""
    import dataclasses

    from geo_assets.settings import (
        HierarchySettings,
        IngestSettings,
        ShardSettings,
        SplitSettings,
        StreetViewSettings,
    )
    from pipeline.resources import DatasetSettings, GeoscoutSettings, StreetViewResource

    resource = DatasetSettings()
    seen: set[str] = set()  # one seed: the split's, also used for the shard order
    for schema in (HierarchySettings, SplitSettings, ShardSettings):
        for f in dataclasses.fields(schema):
            if f.name in DatasetSettings.model_fields and f.name not in seen:
                seen.add(f.name)
                default = list(f.default) if isinstance(f.default, tuple) else f.default
                assert getattr(resource, f.name) == default, f.name
                assert DatasetSettings.model_fields[f.name].description == \
                    f.metadata["description"]
    assert resource.hierarchy_settings() == HierarchySettings()
    assert resource.split_settings() == SplitSettings()
    assert resource.shard_settings() == ShardSettings()
    custom = DatasetSettings(levels=[1, 2, 3], k_folds=3)
    assert custom.hierarchy_settings().levels == (1, 2, 3)
    assert custom.split_settings().k_folds == 3 and custom.split_settings().stratify_level == 1
    assert GeoscoutSettings().ingest_settings() == IngestSettings()
    assert StreetViewResource().headings_deg == list(StreetViewSettings().headings)
