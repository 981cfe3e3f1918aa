"""``evaluation_report``: the trained model on the held-out test split; headline figures as
metadata, the HTML report and metrics.json under reports/<run_name>/ in the data root."""


import dagster as dg

from geo_assets import layout
from pipeline.readable_metadata import file_link
from pipeline.resources import GeoscoutSettings, TrainingSettings


def headline_metadata(metrics: dict) -> dict:
    out: dict = {k: round(float(v), 4) for k, v in metrics["headline"].items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "n_test"}
    out["n_test"] = int(metrics["headline"]["n_test"])
    out.update(baseline_metadata(metrics.get("baselines")))
    for lv, variants in metrics["per_level"].items():
        out[f"top1_level_{lv}"] = round(float(variants["hierarchical"]["top1"]), 4)
        out[f"top5_level_{lv}"] = round(float(variants["hierarchical"]["top5"]), 4)
    out["report_path"] = dg.MetadataValue.path(metrics["report_path"])
    out["report_link"] = file_link(metrics["report_path"])
    out["eval_seconds"] = float(metrics["eval_seconds"])
    rows = "\n".join(f"| {lv} | {v['flat']['top1']:.3f} | {v['hierarchical']['top1']:.3f} |"
                     for lv, v in metrics["per_level"].items())
    out["top1_by_level"] = dg.MetadataValue.md(
        "| level | flat top-1 | hierarchical top-1 |\n|---|---|---|\n" + rows)
    return out


def baseline_metadata(section: dict | None) -> dict:
    """The verdict sentence and the model-vs-baselines table (rounded, verdict per cell)."""
    if not section:
        return {}
    from training.eval_report import fmt

    names = list(section["baselines"])
    rows = [f"| {m} | {fmt(section['model'][m])} | " + " | ".join(
        f"{fmt(section['baselines'][b][m])} ({section['verdicts'][b][m]})" for b in names) + " |"
        for m in section["metrics"]]
    table = ("| metric | model | " + " | ".join(names) + " |\n|---|---|"
             + "---|" * len(names) + "\n" + "\n".join(rows))
    beats_all = all(v == "beats" for per in section["verdicts"].values() for v in per.values()
                    if v != "n/a")
    return {"verdict": dg.MetadataValue.text(section["sentence"]),
            "beats_all_baselines": beats_all,
            "baselines": dg.MetadataValue.md(table)}


# By key, not by import: importing the asset object here would make
# load_assets_from_modules([evaluate]) load trained_model a second time.
TRAINED_MODEL = dg.AssetKey("trained_model")


@dg.asset(deps=[TRAINED_MODEL], kinds={"pytorch", "html"},
          description="Test-split evaluation of trained_model: accuracy per level, distance "
          "ladder, GeoGuessr score, calibration, per-class scores, maps and Grad-CAM.")
def evaluation_report(context: dg.AssetExecutionContext, settings: GeoscoutSettings,
                      training: TrainingSettings) -> dg.MaterializeResult:
    from training.config import loader_workers
    from training.evaluate import evaluate_run

    root = settings.root()
    folder = model_folder(context, training.run_name)
    report = layout.report_dir(folder)
    # Model and shards are read from the root; the report is written locally and published.
    with root.staged(writes=[report]) as local:
        metrics = evaluate_run(root.uri(layout.model_dir(folder), layout.MODEL_FILE),
                               root.uri(layout.DATASETS_DIR, layout.DESCRIPTOR),
                               local / report,
                               batch_size=training.eval_batch_size,
                               workers=loader_workers(training.workers),
                               device=training.device,
                               natural_earth_dir=settings.natural_earth_dir)
    metrics["report_path"] = root.uri(report, layout.REPORT_HTML_FILE)
    context.log.info(f"report: {metrics['report_path']}")
    return dg.MaterializeResult(metadata={**headline_metadata(metrics), "model": folder})


def model_folder(context: dg.AssetExecutionContext, run_name: str) -> str:
    """The folder under models/ of the model the latest trained_model materialization
    produced (its ``run_folder`` metadata); the resource's run_name for older ones."""
    event = context.instance.get_latest_materialization_event(TRAINED_MODEL)
    metadata = event.asset_materialization.metadata if event and event.asset_materialization \
        else {}
    value = metadata.get("run_folder")
    return str(value.value) if value is not None else run_name
