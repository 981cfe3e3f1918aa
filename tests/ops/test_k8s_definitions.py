"""The Kubernetes variant of the definitions: the project's graph loads with
``k8s_job_executor`` (one pod per step, so a backfill's crawl cells fan out) and the GPU
training client; the executor config validates against dagster-k8s's own schema; the pod
that training would start asks for ``nvidia.com/gpu``."""

import dagster as dg
import pytest
from dagster_k8s.pipes import build_pod_body

from geo_assets.errors import InputError
from pipeline import platforms
from pipeline.definitions import build_definitions

IMAGE = "registry.example.com/geoscout:0.1.0"


@pytest.fixture
def k8s_env(monkeypatch):
    monkeypatch.setenv("GEOSCOUT_PLATFORM", "k8s")
    monkeypatch.setenv("GEOSCOUT_IMAGE", IMAGE)
    monkeypatch.setenv("GEOSCOUT_K8S_NAMESPACE", "geoscout")
    monkeypatch.setenv("GEOSCOUT_TRAIN_GPUS", "4")
    monkeypatch.setenv("GEOSCOUT_TRAIN_NODE_SELECTOR", "pool=gpu, accelerator=nvidia-l4")
    monkeypatch.setenv("GEOSCOUT_K8S_ENV_SECRETS", "geoscout-secrets")
    monkeypatch.setenv("GEOSCOUT_DATA_PVC", "geoscout-data")
    monkeypatch.setenv("GEOSCOUT_DATA_MOUNT", "/data")


def test_project_definitions_load_on_kubernetes(k8s_env):
    base = build_definitions("demo")
    defs = platforms.for_platform(base)
    dg.Definitions.validate_loadable(defs)
    assert set(defs.resolve_all_asset_keys()) == set(base.resolve_all_asset_keys())
    jobs = [defs.resolve_job_def(j.name) for j in base.jobs]
    jobs.append(defs.resolve_implicit_global_asset_job_def())
    # dataset_job runs its lightweight steps in its run's own process (pipeline/jobs.py)
    assert jobs and all(j.executor_def.name == "geoscout_k8s" for j in jobs
                        if j.name != "dataset_job")
    assert defs.resolve_job_def("dataset_job").executor_def.name == "in_process"
    # The configured executor passes dagster-k8s's schema (checked here, not at first run).
    resolved = jobs[0].executor_def.config_schema.resolve_config({})
    assert resolved.success, [e.message for e in resolved.errors]
    config = resolved.value["config"]
    assert config["job_namespace"] == "geoscout"
    assert config["env_secrets"] == ["geoscout-secrets"]
    assert config["max_concurrent"] == platforms.PodSettings().max_step_pods
    assert config["step_k8s_config"]["container_config"]["resources"] == (
        platforms.PodSettings().step_resources())
    # Step pods (crawl, curate, the step that launches training) mount the shared data root.
    assert config["volumes"] == [{"name": "geoscout-data",
                                  "persistentVolumeClaim": {"claimName": "geoscout-data"}}]
    assert config["volume_mounts"][0]["mount_path"] == "/data"
    client = defs.resources[platforms.TRAINING_CLIENT_KEY]
    assert isinstance(client, platforms.GpuPipesK8sClient)
    assert (client.image, client.gpus, client.namespace) == (IMAGE, 4, "geoscout")
    # Everything else is the base deployment's.
    assert set(defs.resources) == set(base.resources) | {platforms.TRAINING_CLIENT_KEY}


def test_local_platform_leaves_definitions_alone(monkeypatch):
    monkeypatch.delenv("GEOSCOUT_PLATFORM", raising=False)
    base = build_definitions("demo")
    assert platforms.for_platform(base) is base
    monkeypatch.setenv("GEOSCOUT_PLATFORM", "slurm")
    with pytest.raises(InputError, match="GEOSCOUT_PLATFORM='slurm'"):
        platforms.for_platform(base)


def test_kubernetes_needs_an_image(monkeypatch):
    monkeypatch.delenv("GEOSCOUT_IMAGE", raising=False)
    with pytest.raises(InputError, match="GEOSCOUT_IMAGE"):
        platforms.build_k8s_definitions(dg.Definitions())


def test_training_pod_requests_gpus(k8s_env):
    defs = platforms.build_k8s_definitions(dg.Definitions())
    client = defs.resources[platforms.TRAINING_CLIENT_KEY]
    command = ["torchrun", "--nproc-per-node=4", "-m", "training.train", "--epochs", "3"]
    # The same pod body PipesK8sClient.run submits.
    pod = build_pod_body(pod_name="dagster-train-1", image=client.image, command=command,
                         env_vars={"DAGSTER_PIPES_CONTEXT": "x"}, base_pod_meta=None,
                         base_pod_spec=client.pod_spec(cwd="/opt/geoscout"))
    container = pod.spec.containers[0]
    assert container.image == IMAGE and container.command == command
    assert container.resources.limits["nvidia.com/gpu"] == "4"
    assert container.working_dir == "/opt/geoscout"
    assert {(v.name, v.mount_path) for v in container.volume_mounts} == {
        ("dshm", "/dev/shm"), ("geoscout-data", "/data")}
    assert pod.spec.volumes[0].empty_dir.medium == "Memory"
    assert pod.spec.volumes[1].persistent_volume_claim.claim_name == "geoscout-data"
    assert pod.spec.node_selector == {"pool": "gpu", "accelerator": "nvidia-l4"}
    assert pod.spec.tolerations[0].key == "nvidia.com/gpu"
    assert pod.spec.restart_policy == "Never"
    assert any(e.name == "DAGSTER_PIPES_CONTEXT" for e in container.env)


def test_cpu_only_pod_has_no_gpu_limit():
    spec = platforms.gpu_pod_spec(0)
    assert "nvidia.com/gpu" not in spec["containers"][0]["resources"]["limits"]
    assert "tolerations" not in spec
    with pytest.raises(InputError):
        platforms.gpu_pod_spec(-1)


def test_definitions_load_with_the_helm_values_environment(monkeypatch):
    """The code server's environment exactly as deploy/helm/values.yaml sets it."""
    from pathlib import Path

    import yaml

    values = yaml.safe_load((Path(__file__).resolve().parents[2] / "deploy" / "helm"
                             / "values.yaml").read_text())
    deployment = values["dagster-user-deployments"]["deployments"][0]
    assert deployment["dagsterApiGrpcArgs"] == ["-m", "pipeline.definitions"]
    env = {e["name"]: e["value"] for e in deployment["env"]}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert env["GEOSCOUT_PLATFORM"] == "k8s"
    assert {m["mountPath"] for m in deployment["volumeMounts"]} == {env["GEOSCOUT_DATA_MOUNT"]}
    defs = platforms.for_platform(build_definitions())  # GEOSCOUT_DEPLOYMENT from values
    dg.Definitions.validate_loadable(defs)
    client = defs.resources[platforms.TRAINING_CLIENT_KEY]
    assert client.gpus == int(env["GEOSCOUT_TRAIN_GPUS"])
    assert client.data_claim == env["GEOSCOUT_DATA_PVC"]
    assert defs.resources["settings"].data_root == env["GEOSCOUT_DATA_ROOT"]
