"""``trained_model``: ``torchrun -m training.train`` launched through Dagster Pipes.

Only rank 0 of the training processes opens Pipes and reports, so the step gets exactly one
materialization. The asset records lineage (manifest hash, shard list, settings, the file of
exact training image ids) from the run's model card. It carries the ``gpu`` tag and has no
automation condition: training runs only when asked for (``training_job`` or the UI).
"""


import json
import sys

import dagster as dg
from pydantic import Field

from pipeline.constants import GPU_TAG
from pipeline.resources import GeoscoutSettings, TrainingSettings

# The dataset asset of issue 5 (WebDataset shards + dataset.json).
SHARDS = dg.AssetKey("shards")
# Resource key of the Pipes client: the parameter ``pipes_client`` (PipesSubprocessClient
# locally, pipeline.deployments.GpuPipesK8sClient on Kubernetes).


class TrainRunConfig(dg.Config):
    """Per-run overrides of the ``training`` resource."""

    nproc_per_node: int | None = Field(
        default=None, description="torchrun processes (default: the training resource's).")
    resume: bool = Field(default=False,
                         description="Resume from the run folder's checkpoint.pth if present.")
    extra_args: list[str] = Field(default=[], description="More training CLI flags.")


def torchrun_command(nproc: int, train_args: list[str]) -> list[str]:
    """``--standalone`` rendezvous on a free local port; one process per GPU (or CPU worker)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}", "-m", "training.train", *train_args]


def record_run_id(card_path, run_id: str) -> dict:
    """Add the Dagster run that trained the model to its card (for ``geoscout lineage``)."""
    from training.outputs import write_json_atomic

    card = json.loads(card_path.read_text())
    card["run_ids"] = {"dagster_run_id": run_id}
    write_json_atomic(card_path, card)
    return card


def lineage_metadata(card: dict) -> dict:
    shards = [s["name"] for s in card.get("shards", [])]
    return {
        "manifest_hash": card.get("manifest_hash", ""),
        "tables_version": card.get("tables_version", ""),
        "shards": dg.MetadataValue.json(shards),
        "config": dg.MetadataValue.json(card.get("config", {})),
        "train_image_ids": dg.MetadataValue.path(card["image_ids_file"]),
        "n_train_images": card.get("n_train_images", 0),
        "model_path": dg.MetadataValue.path(card["model_path"]),
        "dagster_run_id": card.get("run_ids", {}).get("dagster_run_id", ""),
    }


@dg.asset(deps=[SHARDS], op_tags=GPU_TAG, kinds={"pytorch"},
          description="Hierarchical geolocation model trained on the shards (torchrun via "
          "Dagster Pipes); models/<run_name>/model.pt and model_card.json in the data root.")
def trained_model(context: dg.AssetExecutionContext, config: TrainRunConfig,
                  settings: GeoscoutSettings, training: TrainingSettings,
                  pipes_client: dg.ResourceParam[dg.PipesClient]) -> dg.MaterializeResult:
    root = settings.root()
    dataset = root.local_path("datasets", "dataset.json")
    out = root.local_path("models", training.run_name)
    args = training.train_args(str(dataset), str(out)) + list(config.extra_args)
    if config.resume:
        args += ["--resume", "auto"]
    nproc = config.nproc_per_node or training.nproc_per_node
    context.log.info(f"training with {nproc} process(es) into {out}")
    result = pipes_client.run(context=context, command=torchrun_command(nproc, args),
                        extras={"run_name": training.run_name}).get_materialize_result()
    card = record_run_id(out / "model_card.json", context.run_id)
    return dg.MaterializeResult(metadata={**(result.metadata or {}), **lineage_metadata(card)},
                                data_version=result.data_version)
