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

from geo_assets import layout
from geo_assets import model_card as mc
from geo_assets.storage import DataRoot
from pipeline.constants import GPU_TAG
from pipeline.resources import GeoscoutSettings, TrainingSettings

# The dataset asset of issue 5 (WebDataset shards + dataset.json).
SHARDS = dg.AssetKey("shards")
# Metadata key of trained_model naming its folder under models/ (evaluation reads it).
RUN_FOLDER_KEY = "run_folder"
# Resource key of the Pipes client: the parameter ``pipes_client`` (PipesSubprocessClient
# locally, pipeline.platforms.GpuPipesK8sClient on Kubernetes).


class TrainRunConfig(dg.Config):
    """Per-run overrides of the ``training`` resource."""

    nproc_per_node: int | None = Field(
        default=None, description="torchrun processes (default: the training resource's).")
    resume: bool = Field(default=False,
                         description="Resume from the run folder's checkpoint.pth if present.")
    extra_args: list[str] = Field(default=[], description="More training CLI flags.")
    run_folder: str | None = Field(
        default=None, description="Folder under models/ to train into. Default: the training "
        "resource's run_name plus this Dagster run's id, so a new run never overwrites an "
        "older model; name an existing folder (with resume) to continue or replace it.")


def run_folder(config: TrainRunConfig, run_name: str, dagster_run_id: str) -> str:
    """The model's folder name under models/: versioned by the Dagster run unless named."""
    return config.run_folder or f"{run_name}-{dagster_run_id[:8]}"


def torchrun_command(nproc: int, train_args: list[str]) -> list[str]:
    """``--standalone`` rendezvous on a free local port; one process per GPU (or CPU worker)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={nproc}", "-m", "training.train", *train_args]


def model_metadata(root: DataRoot, run_name: str) -> dict:
    """The model's Dagster metadata, built once from its card: validation figures per level,
    the model file and the lineage links (``model_lineage_metadata``)."""
    from pipeline.lineage_metadata import model_lineage_metadata

    folder = layout.model_dir(run_name)
    card = json.loads(root.read_bytes(f"{folder}/{layout.MODEL_CARD_FILE}"))
    out: dict = {}
    for level, metrics, temperature in zip(card[mc.LEVELS], card[mc.VALIDATION],
                                           card[mc.TEMPERATURES]):
        out[f"val_top1_level_{level}"] = round(float(metrics["top1"]), 4)
        out[f"temperature_level_{level}"] = round(float(temperature), 4)
    out.update({
        "model_path": dg.MetadataValue.path(card[mc.MODEL_PATH]),
        "train_image_ids": dg.MetadataValue.path(
            root.uri(f"{folder}/{card[mc.TRAIN_IMAGE_IDS]}")),
        "model_sha256": card[mc.MODEL_SHA256], "config_hash": card[mc.CONFIG_HASH],
        "config": dg.MetadataValue.json(card[mc.CONFIG]),
        "train_seconds": card[mc.TRAIN_SECONDS], "epochs_run": card[mc.EPOCHS_RUN],
        "best_epoch": card[mc.BEST_EPOCH], "world_size": card[mc.WORLD_SIZE],
    })
    return {**out, **model_lineage_metadata(root, folder)}


@dg.asset(deps=[SHARDS], op_tags=GPU_TAG, kinds={"pytorch"},
          description="Hierarchical geolocation model trained on the shards (torchrun via "
          "Dagster Pipes); models/<run_name>/model.pt and model_card.json in the data root.")
def trained_model(context: dg.AssetExecutionContext, config: TrainRunConfig,
                  settings: GeoscoutSettings, training: TrainingSettings,
                  pipes_client: dg.ResourceParam[dg.PipesClient]) -> dg.MaterializeResult:
    root = settings.root()
    # Paths or URLs alike: training streams the shards and stages its run folder itself.
    dataset = root.uri(layout.DATASETS_DIR, layout.DESCRIPTOR)
    folder = run_folder(config, training.run_name, context.run_id)
    out = root.uri(layout.model_dir(folder))
    args = (training.train_args(dataset, out, context.run_id)
            + ["--run-name", folder] + list(config.extra_args))
    if config.resume:
        args += ["--resume", "auto"]
    nproc = config.nproc_per_node or training.nproc_per_node
    context.log.info(f"training with {nproc} process(es) into {out}")
    result = pipes_client.run(context=context, command=torchrun_command(nproc, args),
                              extras={"run_name": folder}).get_materialize_result()
    return dg.MaterializeResult(
        metadata={RUN_FOLDER_KEY: folder, **model_metadata(root, folder)},
        data_version=result.data_version)
