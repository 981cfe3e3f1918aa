"""``hyperparameter_study``: an Optuna search on the validation fold (``training.hpo``),
stored beside the model (models/<run_name>/hpo/study.db and study.json in the data root)."""

import dagster as dg
from pydantic import Field

from geo_assets import layout
from pipeline.resources import GeoscoutSettings, TrainingSettings

SHARDS = dg.AssetKey("shards")  # by key: importing the asset would load it twice


class StudyConfig(dg.Config):
    trials: int = Field(default=10, ge=1, description="Trials to run (a stored study resumes).")
    objective: str = Field(default="nll", description="Validation score: 'nll' (finest level, "
                           "minimised) or 'top1' (maximised).")
    seed: int = Field(default=0, description="Seed of Optuna's TPE sampler.")


@dg.asset(deps=[SHARDS], kinds={"optuna", "pytorch"},
          description="Hyper-parameter search (learning rate, weight decay, label smoothing, "
          "dropout) scored on the validation fold only; the test split is never read.")
def hyperparameter_study(context: dg.AssetExecutionContext, config: StudyConfig,
                         settings: GeoscoutSettings,
                         training: TrainingSettings) -> dg.MaterializeResult:
    from training.config import TrainConfig
    from training.hpo import run_study

    root = settings.root()
    hpo = f"{layout.model_dir(training.run_name)}/{layout.HPO_DIR}"
    # Optuna's study.db is SQLite, a local file: the study folder is staged (fetched so a
    # stored study resumes, published when the step succeeds); shards stream from the root.
    with root.staged([hpo], [hpo]) as local:
        out = local / hpo
        base = TrainConfig(**{**training.train_values(), "run_name": training.run_name,
                              "dataset": root.uri(layout.DATASETS_DIR, layout.DESCRIPTOR),
                              "output_dir": str(out)})
        summary = run_study(base, out, config.trials, objective=config.objective,
                            seed=config.seed)
    context.log.info(f"best {config.objective} {summary['best_value']}: {summary['best_params']}")
    rows = "\n".join(f"| {t['number']} | {t['state']} | "
                     f"{'-' if t['value'] is None else round(t['value'], 4)} | "
                     + ", ".join(f"{k}={v:.3g}" for k, v in t["params"].items()) + " |"
                     for t in summary["trials"])
    return dg.MaterializeResult(metadata={
        "best_value": summary["best_value"], "best_trial": summary["best_trial"],
        "best_params": dg.MetadataValue.json(summary["best_params"]),
        "objective": f"{config.objective} on {summary['split']}",
        "trials": dg.MetadataValue.md("| trial | state | value | parameters |\n|---|---|---|---|\n"
                                      + rows),
        "study_path": dg.MetadataValue.path(root.uri(hpo))})
