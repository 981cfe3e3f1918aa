"""Kubernetes pod sizes come from settings (``GEOSCOUT_K8S_<FIELD>``), validated, and reach the
step pods' executor config (checked against dagster-k8s's schema) and the training pod."""

import dagster as dg
import pytest
from dagster_k8s.pipes import build_pod_body

from geo_assets.errors import InputError
from pipeline import platforms


def test_pod_sizes_from_the_environment_reach_step_and_training_pods(monkeypatch):
    monkeypatch.setenv("GEOSCOUT_IMAGE", "registry.example.com/geoscout:0.1.0")
    monkeypatch.setenv("GEOSCOUT_K8S_STEP_MEMORY_LIMIT", "12Gi")
    monkeypatch.setenv("GEOSCOUT_K8S_STEP_CPU_REQUEST", "1500m")
    monkeypatch.setenv("GEOSCOUT_K8S_STEP_CPU_LIMIT", "4")
    monkeypatch.setenv("GEOSCOUT_K8S_MAX_STEP_PODS", "64")
    monkeypatch.setenv("GEOSCOUT_K8S_TRAIN_MEMORY", "200Gi")
    defs = platforms.build_k8s_definitions(dg.Definitions())
    resolved = defs.executor.config_schema.resolve_config({})
    assert resolved.success, [e.message for e in resolved.errors]
    config = resolved.value["config"]
    assert config["max_concurrent"] == 64
    assert config["step_k8s_config"]["container_config"]["resources"] == {
        "requests": {"cpu": "1500m", "memory": "2Gi"}, "limits": {"cpu": "4", "memory": "12Gi"}}
    client = defs.resources[platforms.TRAINING_CLIENT_KEY]
    pod = build_pod_body(pod_name="t", image=client.image, command=["true"], env_vars={},
                         base_pod_meta=None, base_pod_spec=client.pod_spec())
    assert pod.spec.containers[0].resources.limits["memory"] == "200Gi"
    assert pod.spec.containers[0].resources.requests["cpu"] == "8"  # the default


@pytest.mark.parametrize(("name", "value", "message"), [
    ("GEOSCOUT_K8S_STEP_MEMORY_LIMIT", "4GB", "not a Kubernetes quantity"),
    ("GEOSCOUT_K8S_STEP_MEMORY_LIMIT", "1Gi", "memory limit 1Gi is below its request 2Gi"),
    ("GEOSCOUT_K8S_STEP_CPU_REQUEST", "0", "must be > 0"),
    ("GEOSCOUT_K8S_MAX_STEP_PODS", "many", "whole number"),
])
def test_bad_pod_sizes_are_named(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(InputError, match=message):
        platforms.PodSettings.from_env()


def test_every_pod_setting_has_a_description():
    import dataclasses

    for f in dataclasses.fields(platforms.PodSettings):
        assert f.metadata.get("description"), f.name
