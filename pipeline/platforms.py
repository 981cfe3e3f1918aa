"""Where the geoscout definitions execute: this machine (default) or Kubernetes.

Orthogonal to ``GEOSCOUT_DEPLOYMENT`` (demo / production resources, pipeline.definitions):
``GEOSCOUT_PLATFORM=k8s`` selects the Kubernetes variant (see docs/operations.md):

- every step runs as its own Kubernetes Job through ``k8s_job_executor``, so a backfill over
  crawl cells fans out to pods (``max_concurrent`` pods per run; API pools still apply);
- training runs in a GPU pod through ``PipesK8sClient`` (``GpuPipesK8sClient`` below): the
  pod asks for ``nvidia.com/gpu`` and torchrun runs one process per GPU inside it.

The environment is read when the definitions are built (at code-server start), never at
import; images, namespaces and GPU counts come from these variables:

``GEOSCOUT_IMAGE``            user-code image (also used for training pods)
``GEOSCOUT_K8S_NAMESPACE``    namespace for step jobs and training pods (default: current)
``GEOSCOUT_TRAIN_GPUS``       GPUs per training pod (default 1)
``GEOSCOUT_TRAIN_NODE_SELECTOR``  ``key=value[,key=value]`` for the GPU node pool
``GEOSCOUT_K8S_ENV_SECRETS``  comma-separated Secret names mounted as env in step pods
``GEOSCOUT_DATA_PVC``         a ReadWriteMany PersistentVolumeClaim holding the data root,
                              mounted at ``GEOSCOUT_DATA_MOUNT`` (default /data) in step and
                              training pods (training writes its run folder there and the
                              step that launched it reads the model card back)
``GEOSCOUT_K8S_<FIELD>``      pod sizes: one variable per ``PodSettings`` field (upper case,
                              e.g. ``GEOSCOUT_K8S_STEP_MEMORY_LIMIT=8Gi``), validated
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
from dagster_k8s import PipesK8sClient, k8s_job_executor
from kubernetes.utils.quantity import parse_quantity

from geo_assets.errors import InputError
from geo_assets.settings import doc
from pipeline import constants

PLATFORM_ENV = "GEOSCOUT_PLATFORM"
PLATFORMS = ("local", "k8s")
# Resource key of the Pipes client that launches training (PipesSubprocessClient locally).
TRAINING_CLIENT_KEY = "pipes_client"
# Per-pool step limits, stored in the instance database (dagster.yaml only has a default).
POOL_LIMITS: dict[str, int] = {constants.MAPILLARY_POOL: 2, constants.STREETVIEW_POOL: 1}
POD_ENV_PREFIX = "GEOSCOUT_K8S_"


@dataclass(frozen=True)
class PodSettings:
    """Pod sizes on Kubernetes (Kubernetes quantities: ``500m``, ``2``, ``4Gi``). Each field is
    read from ``GEOSCOUT_K8S_<FIELD>`` by ``from_env``; limits must not be below requests."""

    step_cpu_request: str = field(default="1", metadata=doc(
        "CPU a step pod requests (crawl cell, curation, shard part, index assembly, the step "
        "that launches training)."))
    step_cpu_limit: str = field(default="2", metadata=doc("CPU limit of a step pod."))
    step_memory_request: str = field(default="2Gi", metadata=doc(
        "Memory a step pod requests."))
    step_memory_limit: str = field(default="4Gi", metadata=doc(
        "Memory limit of a step pod (a shard part holds about 4 x workers x chunk_size "
        "resized images; the index assembly reads the shard input table)."))
    max_step_pods: int = field(default=16, metadata=doc(
        "Step pods running at once within one run (k8s_job_executor max_concurrent)."))
    train_cpu: str = field(default="8", metadata=doc(
        "CPU of a training pod (requests = limits): data-loader workers live here."))
    train_memory: str = field(default="48Gi", metadata=doc("Memory of a training pod."))
    train_shm: str = field(default="16Gi", metadata=doc(
        "Size of the training pod's memory-backed /dev/shm (loader workers, NCCL)."))

    def __post_init__(self) -> None:
        sizes = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type in (int, "int"):
                if not isinstance(value, int) or value < 1:
                    raise InputError(f"{POD_ENV_PREFIX}{f.name.upper()}={value!r}: use a "
                                     "whole number of at least 1")
                continue
            try:
                sizes[f.name] = parse_quantity(value)
            except ValueError:
                raise InputError(f"{POD_ENV_PREFIX}{f.name.upper()}={value!r} is not a "
                                 "Kubernetes quantity (e.g. 500m, 2, 4Gi)") from None
            if sizes[f.name] <= 0:
                raise InputError(f"{POD_ENV_PREFIX}{f.name.upper()}={value!r} must be > 0")
        for kind in ("cpu", "memory"):
            if sizes[f"step_{kind}_limit"] < sizes[f"step_{kind}_request"]:
                raise InputError(f"step pod {kind} limit {getattr(self, f'step_{kind}_limit')}"
                                 f" is below its request "
                                 f"{getattr(self, f'step_{kind}_request')}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> PodSettings:
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(POD_ENV_PREFIX + f.name.upper(), "").strip()
            if raw:
                is_int = f.type in (int, "int")
                if is_int and not raw.isdigit():
                    raise InputError(f"{POD_ENV_PREFIX}{f.name.upper()}={raw!r}: use a whole "
                                     "number of at least 1")
                values[f.name] = int(raw) if is_int else raw
        return cls(**values)

    def step_resources(self) -> dict[str, dict[str, str]]:
        """The ``resources`` of a step pod's container."""
        return {"requests": {"cpu": self.step_cpu_request, "memory": self.step_memory_request},
                "limits": {"cpu": self.step_cpu_limit, "memory": self.step_memory_limit}}


def platform_name() -> str:
    name = os.environ.get(PLATFORM_ENV, "local").strip().lower() or "local"
    if name not in PLATFORMS:
        raise InputError(f"{PLATFORM_ENV}={name!r} is not a platform; use one of "
                         f"{', '.join(PLATFORMS)}")
    return name


def apply_pool_limits(instance: dg.DagsterInstance,
                      limits: Mapping[str, int] = POOL_LIMITS) -> dict[str, int]:
    """Set the per-pool step limits in the instance's database (idempotent); returns them.

    Same as ``dagster instance concurrency set POOL LIMIT`` for each pool."""
    for pool, limit in limits.items():
        instance.event_log_storage.set_concurrency_slots(pool, int(limit))
    return dict(limits)


def _parse_selector(text: str | None) -> dict[str, str]:
    pairs = [p.strip() for p in (text or "").split(",") if p.strip()]
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
                raise InputError(f"node selector item {pair!r} is not key=value "
                             "(GEOSCOUT_TRAIN_NODE_SELECTOR)")
        out[key.strip()] = value.strip()
    return out


def data_volume(claim: str | None, mount: str = "/data") -> tuple[list[dict], list[dict]]:
    """(volumes, volume mounts) for the data-root claim, or ([], []) without one."""
    if not claim:
        return [], []
    return ([{"name": "geoscout-data", "persistentVolumeClaim": {"claimName": claim}}],
            [{"name": "geoscout-data", "mountPath": mount}])


def gpu_pod_spec(gpus: int, *, cpu: str = "8", memory: str = "48Gi", shm: str = "16Gi",
                 node_selector: Mapping[str, str] | None = None,
                 working_dir: str | None = None, data_claim: str | None = None,
                 data_mount: str = "/data") -> dict[str, Any]:
    """Pod spec for a training pod: ``nvidia.com/gpu`` limits, the NVIDIA taint tolerated,
    and a memory-backed /dev/shm (DataLoader workers and NCCL need more than the 64 MiB
    default). Image and command are set by ``PipesK8sClient.run``."""
    if gpus < 0:
        raise InputError(f"GPUs per training pod must be >= 0, got {gpus}")
    limits: dict[str, str] = {"cpu": cpu, "memory": memory}
    if gpus:
        limits["nvidia.com/gpu"] = str(gpus)
    volumes, mounts = data_volume(data_claim, data_mount)
    container: dict[str, Any] = {
        "name": "train",
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": limits},
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}, *mounts],
    }
    if working_dir:
        container["workingDir"] = working_dir
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm}},
                    *volumes],
    }
    if gpus:
        spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists",
                                "effect": "NoSchedule"}]
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    return spec


class GpuPipesK8sClient(PipesK8sClient):
    """``PipesK8sClient`` that runs the training command in a GPU pod.

    ``run(context=, command=, env=, extras=, cwd=)`` has the same shape as
    ``PipesSubprocessClient.run``, so the training asset calls either client the same way;
    the image, namespace and pod resources come from the deployment."""

    def __init__(self, image: str, *, gpus: int = 1, namespace: str | None = None,
                 node_selector: Mapping[str, str] | None = None, data_claim: str | None = None,
                 data_mount: str = "/data", pod_wait_timeout_s: float = 3 * 24 * 3600.0,
                 pods: PodSettings | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.pods = pods or PodSettings()
        self.image = image
        self.gpus = int(gpus)
        self.namespace = namespace
        self.node_selector = dict(node_selector or {})
        self.data_claim = data_claim
        self.data_mount = data_mount
        self.pod_wait_timeout_s = pod_wait_timeout_s

    def pod_spec(self, cwd: str | None = None) -> dict[str, Any]:
        return gpu_pod_spec(self.gpus, cpu=self.pods.train_cpu, memory=self.pods.train_memory,
                            shm=self.pods.train_shm, node_selector=self.node_selector,
                            working_dir=cwd, data_claim=self.data_claim,
                            data_mount=self.data_mount)

    def run(self, *, context, command: str | Sequence[str],  # type: ignore[override]
            extras: Mapping[str, Any] | None = None, env: Mapping[str, str] | None = None,
            cwd: str | None = None, **kwargs: Any):
        meta = {"labels": {"app.kubernetes.io/part-of": "geoscout",
                           "geoscout/role": "training"}}
        return super().run(context=context, extras=extras, image=self.image, command=command,
                           namespace=self.namespace, env=env, base_pod_meta=meta,
                           base_pod_spec=self.pod_spec(cwd),
                           pod_wait_timeout=self.pod_wait_timeout_s, **kwargs)


def k8s_executor(namespace: str | None = None, env_secrets: Sequence[str] = (),
                 pods: PodSettings | None = None, data_claim: str | None = None,
                 data_mount: str = "/data") -> dg.ExecutorDefinition:
    """``k8s_job_executor``: one Kubernetes Job per step (per crawl-cell or shard-part
    partition step in a backfill batch), sized by ``pods``; GPU-tagged steps limited to one at
    a time within a run."""
    pods = pods or PodSettings()
    config: dict[str, Any] = {
        "max_concurrent": pods.max_step_pods,
        "tag_concurrency_limits": [{"key": "gpu", "limit": 1}],
        "step_k8s_config": {"container_config": {"resources": pods.step_resources()}},
        "env_secrets": list(env_secrets),
        "labels": {"app.kubernetes.io/part-of": "geoscout"},
    }
    if namespace:
        config["job_namespace"] = namespace
    volumes, mounts = data_volume(data_claim, data_mount)
    if volumes:
        config["volumes"] = volumes
        config["volume_mounts"] = [{"name": m["name"], "mount_path": m["mountPath"]}
                                   for m in mounts]
    return k8s_job_executor.configured(config, name="geoscout_k8s")


def build_k8s_definitions(base: dg.Definitions, *, image: str | None = None) -> dg.Definitions:
    """The Kubernetes variant of ``base`` (``pipeline.definitions``' graph): same
    assets, checks, jobs, schedules and sensors; steps run as Kubernetes Jobs and training
    through ``GpuPipesK8sClient`` under ``TRAINING_CLIENT_KEY``."""
    image = image or os.environ.get("GEOSCOUT_IMAGE")
    if not image:
        raise InputError("GEOSCOUT_IMAGE is not set: the Kubernetes deployment needs the "
                         "user-code image (registry/geoscout:TAG) for training pods")
    namespace = os.environ.get("GEOSCOUT_K8S_NAMESPACE") or None
    secrets = [s.strip() for s in os.environ.get("GEOSCOUT_K8S_ENV_SECRETS", "").split(",")
               if s.strip()]
    claim = os.environ.get("GEOSCOUT_DATA_PVC") or None
    mount = os.environ.get("GEOSCOUT_DATA_MOUNT", "/data")
    gpus = os.environ.get("GEOSCOUT_TRAIN_GPUS", "1")
    if not gpus.strip().isdigit():
        raise InputError(f"GEOSCOUT_TRAIN_GPUS={gpus!r} is not a whole number of GPUs")
    pods = PodSettings.from_env()
    client = GpuPipesK8sClient(
        image, gpus=int(gpus), namespace=namespace,
        node_selector=_parse_selector(os.environ.get("GEOSCOUT_TRAIN_NODE_SELECTOR")),
        data_claim=claim, data_mount=mount, pods=pods)
    resources = {**(base.resources or {}), TRAINING_CLIENT_KEY: client}
    return dg.Definitions(
        assets=base.assets, asset_checks=base.asset_checks, schedules=base.schedules,
        sensors=base.sensors, jobs=base.jobs, resources=resources, loggers=base.loggers,
        executor=k8s_executor(namespace, secrets, pods, data_claim=claim, data_mount=mount),
        metadata=base.metadata)


def for_platform(base: dg.Definitions) -> dg.Definitions:
    """``base`` as it should run on the platform named by ``GEOSCOUT_PLATFORM``
    (``local``: unchanged; ``k8s``: ``build_k8s_definitions(base)``)."""
    return build_k8s_definitions(base) if platform_name() == "k8s" else base
