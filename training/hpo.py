"""Hyper-parameter search (Optuna) on the validation fold only.

    python -m training.hpo --dataset DATA/datasets/dataset.json --output-dir DATA/models/run/hpo \
        --trials 20 [any training flag, e.g. --backbone efficientnet_lite0 --epochs 6]

Each trial trains with the base settings plus the sampled ones (learning rate, weight decay,
label smoothing, dropout) and is scored on the validation fold (``--val-fold``) with the
finest level's validation NLL (or top-1 with ``--objective top1``); the test split is never
read. The study is stored beside the model: ``study.db`` (Optuna's SQLite storage, so a
search resumes where it stopped) and ``study.json`` (best parameters and every trial, for
people and the Dagster asset). Trial runs go to ``trials/<n>/`` inside the output folder.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from geo_assets import model_card as mc
from geo_assets.storage import write_json_atomic
from training.config import TrainConfig, add_config_flags, from_namespace

log = logging.getLogger("geoscout.training")
STUDY_DB = "study.db"
STUDY_JSON = "study.json"
TRIALS_DIR = "trials"
OBJECTIVES = {"nll": "minimize", "top1": "maximize"}
# name -> (low, high, log scale); sampled on top of the base settings
SPACE = {"lr": (1e-4, 3e-2, True), "weight_decay": (1e-4, 0.2, True),
         "label_smoothing": (0.0, 0.3, False), "dropout": (0.0, 0.5, False)}


def sample(trial, space: dict = SPACE) -> dict:
    return {name: trial.suggest_float(name, low, high, log=log_scale)
            for name, (low, high, log_scale) in space.items()}


def validation_score(card: dict, objective: str) -> float:
    """The finest level's validation NLL or top-1 from the model card."""
    finest = card[mc.VALIDATION][-1]
    return float(finest[objective])


def run_study(base: TrainConfig, output_dir: str | Path, trials: int, *, objective: str = "nll",
              seed: int = 0, space: dict = SPACE, study_name: str = "geoscout") -> dict:
    """Run ``trials`` more trials (resuming a stored study); writes and returns study.json."""
    import optuna

    from training.train import main as train

    if objective not in OBJECTIVES:
        raise ValueError(f"objective {objective!r}: use one of {', '.join(OBJECTIVES)}")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(study_name=study_name, storage=f"sqlite:///{out / STUDY_DB}",
                                direction=OBJECTIVES[objective], load_if_exists=True,
                                sampler=optuna.samplers.TPESampler(seed=seed))

    def run_trial(trial) -> float:
        params = sample(trial, space)
        folder = out / TRIALS_DIR / str(trial.number)
        cfg = base.model_copy(update={**params, "output_dir": str(folder),
                                      "run_name": f"{base.run_name}-trial{trial.number}",
                                      "resume": None})
        card = train(TrainConfig(**cfg.model_dump()))  # validated again with the new values
        trial.set_user_attr("model", str(folder))
        return validation_score(card, objective)

    study.optimize(run_trial, n_trials=trials)
    return write_summary(study, out, base, objective)


def write_summary(study, out: Path, base: TrainConfig, objective: str) -> dict:
    done = [t for t in study.trials if t.value is not None]
    summary = {"study": study.study_name, "storage": STUDY_DB, "objective": objective,
               "direction": OBJECTIVES[objective], "split": f"validation fold {base.val_fold}",
               "space": {k: list(v) for k, v in SPACE.items()},
               "best_value": study.best_value if done else None,
               "best_params": study.best_params if done else {},
               "best_trial": study.best_trial.number if done else None,
               "trials": [{"number": t.number, "value": t.value, "state": t.state.name,
                           "params": t.params, "model": t.user_attrs.get("model")}
                          for t in study.trials]}
    write_json_atomic(out / STUDY_JSON, summary, indent=1)
    return summary


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("geoscout hpo", description="Hyper-parameter search on the "
                                "validation fold (Optuna); every training flag is accepted.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--trials", type=int, default=20, help="trials to run (more on resume)")
    p.add_argument("--objective", choices=sorted(OBJECTIVES), default="nll",
                   help="validation NLL (minimised) or top-1 (maximised), finest level")
    p.add_argument("--study-seed", type=int, default=0, help="seed of the TPE sampler")
    add_config_flags(p)
    return p


def cli(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    base = from_namespace(args)
    summary = run_study(base, base.output_dir, args.trials, objective=args.objective,
                        seed=args.study_seed)
    print(json.dumps({k: summary[k] for k in ("best_value", "best_params", "best_trial")},
                     indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
