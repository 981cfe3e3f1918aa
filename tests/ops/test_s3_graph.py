"""The whole demo graph with the data root on object storage (moto's S3 server on loopback),
from the grid to the evaluation report, equals the same graph on a local folder: same
manifest, split table, shard bytes and index, same metrics (CPU, fixed seed), and lineage and
``geoscout predict`` answer from the bucket as they do from the folder.

Both runs go through ``geoscout demo --preset tiny`` (real Dagster instances, the demo server
in its own process, torchrun through Pipes), each with its own ``DAGSTER_HOME``."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from geo_assets import layout, lineage
from geo_assets.storage import DataRoot
from pipeline import demo_run

# Differ between any two runs (timings, where files are, the Dagster run id): not results.
RUN_KEYS = {"eval_seconds", "report_path", "model", "created_at", "dataset"}


def _demo(root: str, home: Path, monkeypatch) -> None:
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    assert demo_run.cli(["--preset", "tiny", "--data-root", root, "-q"]) == 0


def _one(root: DataRoot, pattern: str) -> str:
    found = root.glob(pattern)
    assert len(found) == 1, (pattern, found)
    return found[0]


def _results(value):
    """``value`` without what differs between any two runs: the RUN_KEYS at any depth, and
    file locations (a local path in one run is a bucket URL in the other)."""
    if isinstance(value, dict):
        return {k: _results(v) for k, v in value.items() if k not in RUN_KEYS}
    if isinstance(value, list):
        return [_results(v) for v in value]
    if isinstance(value, str) and ("://" in value or value.startswith("/")):
        return "<location>"
    return value


def torch_equal(a, b) -> bool:
    import torch

    return torch.equal(a, b)


def _model_file(root: DataRoot, folder: str) -> dict:
    import io

    import torch

    data = root.read_bytes(f"{layout.model_dir(folder)}/{layout.MODEL_FILE}")
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def runs(s3_server, tmp_path_factory):
    """The tiny demo on a local folder and on ``s3://bucket/<prefix>/data`` (once per module)."""
    from .conftest import S3_ENV

    mp = pytest.MonkeyPatch()
    base = tmp_path_factory.mktemp("s3_graph")
    try:
        for key, value in S3_ENV.items():
            mp.setenv(key, value)
        mp.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint_url)
        mp.setenv("GEOSCOUT_STAGE_DIR", str(base / "stage"))
        local = DataRoot(str(base / "data"))
        remote = DataRoot(f"s3://{s3_server.bucket}/{uuid.uuid4().hex[:8]}/data")
        _demo(local.url, base / "home_local", mp)
        _demo(remote.url, base / "home_s3", mp)
        yield local, remote, base
    finally:
        mp.undo()


@pytest.mark.slow
def test_dataset_files_are_byte_identical(runs):
    local, remote, _ = runs
    for rel in (layout.IMAGE_MANIFEST, layout.CELL_VERSIONS,
                *(layout.in_datasets(n) for n in (layout.SPLITS, layout.SPLITS_EXCLUDED,
                                                  layout.LABELS, layout.SHARD_INDEX,
                                                  layout.SHARD_CONTENTS))):
        assert remote.read_bytes(rel) == local.read_bytes(rel), rel
    index = json.loads(remote.read_bytes(layout.in_datasets(layout.SHARD_INDEX)))
    shards = local.glob(layout.in_datasets(f"{layout.SHARDS_DIR}/*.tar"))
    assert shards and remote.glob(layout.in_datasets(f"{layout.SHARDS_DIR}/*.tar")) == shards
    assert len(shards) == len(index["shards"])
    for rel in shards:
        assert remote.read_bytes(rel) == local.read_bytes(rel), rel
    # Nothing staged is left behind: no temporary names in the bucket, an empty stage folder.
    assert not [p for p in remote.glob("**") if ".tmp" in p]


@pytest.mark.slow
def test_stage_folder_is_emptied(runs):
    _, _, base = runs
    assert not list((base / "stage").iterdir())


@pytest.mark.slow
def test_model_and_report_equal_the_local_run(runs):
    local, remote, _ = runs
    folders = {}
    for name, root in (("local", local), ("s3", remote)):
        card_rel = _one(root, f"{layout.MODELS_DIR}/*/{layout.MODEL_CARD_FILE}")
        card = json.loads(root.read_bytes(card_rel))
        folders[name] = card_rel.split("/")[1]
        assert card["model_path"] == root.uri(layout.MODELS_DIR, folders[name],
                                              layout.MODEL_FILE)
    local_card = json.loads(local.read_bytes(
        f"{layout.model_dir(folders['local'])}/{layout.MODEL_CARD_FILE}"))
    remote_card = json.loads(remote.read_bytes(
        f"{layout.model_dir(folders['s3'])}/{layout.MODEL_CARD_FILE}"))
    assert remote_card["validation"] == local_card["validation"]
    assert remote_card["temperatures"] == local_card["temperatures"]
    # The same weights (model.pt's bytes differ only by its info: run folder, paths).
    models = {name: _model_file(root, folders[name])
              for name, root in (("local", local), ("s3", remote))}
    weights = models["local"]["state_dict"]
    assert weights and models["s3"]["state_dict"].keys() == weights.keys()
    assert all(torch_equal(models["s3"]["state_dict"][k], weights[k]) for k in weights)
    for key in ("tables", "temperatures", "location", "calibration"):
        assert models["s3"][key] == models["local"][key], key
    metrics = {name: json.loads(root.read_bytes(
        f"{layout.report_dir(folders[name])}/{layout.METRICS_FILE}"))
        for name, root in (("local", local), ("s3", remote))}
    assert metrics["s3"]["headline"]["n_test"] > 0
    assert _results(metrics["s3"]) == _results(metrics["local"])
    assert remote.exists(f"{layout.report_dir(folders['s3'])}/{layout.REPORT_HTML_FILE}")


@pytest.mark.slow
def test_lineage_answers_from_the_bucket(runs):
    import pyarrow.parquet as pq

    local, remote, _ = runs
    ids = _one(local, f"{layout.MODELS_DIR}/*/{layout.TRAIN_IDS_FILE}")
    with local.fs.open(local.path(ids), "rb") as f:
        image_id = pq.read_table(f).column("image_id")[0].as_py()  # a training image
    here, there = lineage.image_lineage(local, image_id), lineage.image_lineage(remote, image_id)
    assert there.shard is not None and there.shard == here.shard
    assert there.split == here.split and there.manifest == here.manifest
    assert [m.role for m in there.models] == [m.role for m in here.models] == ["train"]


@pytest.mark.slow
def test_predict_reads_the_model_from_the_bucket(runs, capsys):
    from training import predict

    local, remote, base = runs
    photo = base / "photo.jpg"
    photo.write_bytes(local.read_bytes(local.glob(f"{layout.IMAGES_DIR}/*/*/*.jpg")[0]))
    answers = {}
    for name, root in (("local", local), ("s3", remote)):
        assert predict.cli([str(photo), "--data-root", root.url, "--json"]) == 0
        answers[name] = [{k: v for k, v in r.items() if k != "model"}
                         for r in json.loads(capsys.readouterr().out)]
    assert answers["s3"] == answers["local"]


# --- the staging helper on its own (fast) ------------------------------------------------------

@pytest.fixture
def bucket_root(s3_env, tmp_path, monkeypatch):
    monkeypatch.setenv("GEOSCOUT_STAGE_DIR", str(tmp_path / "stage"))
    root = DataRoot(f"s3://{s3_env.bucket}/{uuid.uuid4().hex[:8]}/data")
    for rel, data in (("d/keep.bin", b"k"), ("d/change.bin", b"old"), ("d/gone.bin", b"g"),
                      ("other.txt", b"o")):
        root.write_bytes(rel, data)
    return root


def test_staged_publishes_changes_and_mirrors_deletions(bucket_root, tmp_path):
    root = bucket_root
    with root.staged(["d", "missing.txt"], ["d", "d/index.json"]) as local:
        assert sorted(p.name for p in (local / "d").iterdir()) == ["change.bin", "gone.bin",
                                                                  "keep.bin"]
        assert not (local / "other.txt").exists()  # only what was asked for is fetched
        (local / "d" / "change.bin").write_bytes(b"new")
        (local / "d" / "gone.bin").unlink()
        (local / "d" / "sub").mkdir()
        (local / "d" / "sub" / "added.bin").write_bytes(b"a")
        (local / "d" / "index.json").write_text("{}")
    files = sorted(p.removeprefix(root.base + "/") for p in root.fs.find(root.path("d")))
    assert files == ["d/change.bin", "d/index.json", "d/keep.bin", "d/sub/added.bin"]
    assert root.read_bytes("d/change.bin") == b"new" and root.read_bytes("other.txt") == b"o"
    assert not list((tmp_path / "stage").iterdir())


def test_a_failed_step_publishes_nothing(bucket_root, tmp_path):
    root = bucket_root
    with pytest.raises(RuntimeError), root.staged(["d"], ["d"]) as local:
        (local / "d" / "change.bin").write_bytes(b"half")
        (local / "d" / "gone.bin").unlink()
        raise RuntimeError("step failed")
    assert root.read_bytes("d/change.bin") == b"old" and root.exists("d/gone.bin")
    assert not list((tmp_path / "stage").iterdir())


def test_a_local_root_is_its_own_stage(tmp_path):
    root = DataRoot(str(tmp_path / "data"))
    with root.staged(["x"], ["x"]) as local:
        assert local == Path(root.base)


def test_local_copy_of_a_missing_model_names_it(bucket_root):
    from geo_assets.errors import InputError
    from geo_assets.storage import local_copy

    url = bucket_root.uri("models/run/model.pt")
    with pytest.raises(InputError, match="models/run/model.pt"), local_copy(url):
        pass
    with local_copy(bucket_root.uri("other.txt")) as path:
        assert path.read_bytes() == b"o"


# --- a training run folder in the bucket --------------------------------------------------------

def _train_flags(dataset, out: str, *extra: str) -> list[str]:
    return ["--dataset", str(dataset), "--output-dir", out, "--epochs", "2",
            "--batch-size", "8", "--workers", "0", "--image-size", "32", "--device", "cpu",
            "--threads", "1", "--deterministic", "--seed", "3", "--checkpoint-every", "5",
            "--patience", "0", "--backbone", "tiny", "--no-pretrained", *extra]


@pytest.mark.slow
def test_a_run_folder_in_the_bucket_is_resumed_from_the_bucket(s3_env, tmp_path, monkeypatch):
    """``--output-dir s3://...``: a run stopped mid-way leaves its checkpoint in the bucket
    (and no model), and ``--resume auto`` continues from it to the uninterrupted run's end."""
    import torch

    from tests.training.tiny_dataset import build_tiny_dataset
    from training import train

    monkeypatch.setenv("GEOSCOUT_STAGE_DIR", str(tmp_path / "stage"))
    dataset = build_tiny_dataset(tmp_path / "datasets", per_class=4, size=32)
    run = DataRoot(f"s3://{s3_env.bucket}/{uuid.uuid4().hex[:8]}/data/models/run")
    threads = torch.get_num_threads()
    try:
        assert train.cli(_train_flags(dataset, str(tmp_path / "full"))) == 0
        assert train.cli(_train_flags(dataset, run.url, "--stop-after-steps", "7")) == 0
        assert run.exists(layout.CHECKPOINT_FILE) and not run.exists(layout.MODEL_FILE)
        assert train.cli(_train_flags(dataset, run.url, "--resume", "auto")) == 0
    finally:
        torch.use_deterministic_algorithms(False)
        torch.set_num_threads(threads)
    full = json.loads((tmp_path / "full" / layout.MODEL_CARD_FILE).read_text())
    resumed = json.loads(run.read_bytes(layout.MODEL_CARD_FILE))
    for key in ("validation", "history", "temperatures", "n_train_images"):
        assert resumed[key] == full[key], key
    assert resumed["model_path"] == f"{run.url}/{layout.MODEL_FILE}"
    assert run.exists(layout.MODEL_FILE) and run.exists(layout.TRAIN_IDS_FILE)
    assert not list((tmp_path / "stage").iterdir())
