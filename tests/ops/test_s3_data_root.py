"""The data root on object storage: ``DataRoot("s3://bucket/prefix")`` against moto's
S3-compatible server on loopback. Raw images, manifests and shards go in and come back
byte for byte; lineage answers from the bucket; a failed write leaves no object."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import uuid

import pyarrow.parquet as pq
import pytest

from geo_assets import layout, lineage
from geo_assets.manifest import MANIFEST_SCHEMA
from geo_assets.storage import DataRoot

from . import ops_data

pytestmark = pytest.mark.slow


def _shard(name: str) -> str:
    return layout.in_datasets(f"{layout.SHARDS_DIR}/{layout.shard_file(name)}")


@pytest.fixture
def s3_root(s3_env):
    # The endpoint comes from AWS_ENDPOINT_URL_S3 (botocore reads it for every S3 client).
    return DataRoot(f"s3://{s3_env.bucket}/{uuid.uuid4().hex[:8]}/data")


@pytest.fixture
def built(s3_root):
    return ops_data.build(s3_root)


def test_images_manifests_and_shards_round_trip(built, s3_env):
    import boto3

    root = built.root
    assert root.uri("x") == f"{root.url}/x" and not root.is_local
    # The objects really are in the bucket (listed with a plain S3 client, not fsspec).
    s3 = boto3.client("s3", endpoint_url=s3_env.endpoint_url)
    prefix = root.base.split("/", 1)[1] + "/"
    keys = {o["Key"][len(prefix):] for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=s3_env.bucket, Prefix=prefix) for o in page.get("Contents", [])}
    assert layout.IMAGE_MANIFEST in keys and layout.in_datasets(layout.SHARD_INDEX) in keys
    assert not any(".tmp" in k for k in keys)

    # Raw images: content-addressed, bytes intact, written once.
    images = root.glob(f"{layout.IMAGES_DIR}/*/*/*.jpg")
    assert len(images) == len(built.rows)
    for rel in images:
        digest = rel.rsplit("/", 1)[1].removesuffix(".jpg")
        assert hashlib.sha256(root.read_bytes(rel)).hexdigest() == digest
    assert root.put_image(ops_data.jpeg(0)) == (built.rows[0]["sha256"], False)

    # Manifests: the merged table and every per-cell file read back with the schema.
    with root.fs.open(root.path(layout.IMAGE_MANIFEST), "rb") as f:
        table = pq.read_table(f)
    assert table.schema.equals(MANIFEST_SCHEMA, check_metadata=False)
    assert sorted(table.column("image_id").to_pylist()) == sorted(r["image_id"]
                                                                  for r in built.rows)
    assert len(root.glob(layout.cell_manifest("mapillary", "*"))) == len(ops_data.CELLS)

    # Shards: every tar listed in the index has its sha256 and the samples of its contents.
    index = json.loads(root.read_bytes(layout.in_datasets(layout.SHARD_INDEX)))
    assert {s["name"] for s in index["shards"]} == set(built.shards)
    for shard in index["shards"]:
        data = root.read_bytes(_shard(shard["name"]))
        assert hashlib.sha256(data).hexdigest() == shard["sha256"]
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            records = [json.loads(tar.extractfile(m).read()) for m in tar
                       if m.name.endswith(".json")]
        assert sorted(r["image_id"] for r in records) == built.shards[shard["name"]]


def test_shards_stream_with_webdataset_from_the_bucket(built):
    import webdataset as wds

    name = min(built.shards)
    url = built.root.uri(_shard(name))
    with built.root.fs.open(url, "rb") as f:  # fsspec stream, as a training loader reads it
        samples = list(wds.tariterators.tar_file_expander([{"stream": f, "url": url}]))
    ids = sorted(json.loads(s["json"])["image_id"] for s in wds.tariterators.group_by_keys(
        iter(samples)))
    assert ids == built.shards[name]


def test_lineage_answers_from_the_bucket(built):
    image_id = built.models["run-b"][0]
    item = lineage.image_lineage(built.root, image_id)
    assert item.shard in built.shards and image_id in built.shards[item.shard]
    assert {m.name for m in item.models} == {"run-a", "run-b"}
    model = lineage.model_lineage(built.root, "run-a")
    assert model.manifest_current is True and model.n_train_images == len(built.models["run-a"])


def test_failed_write_leaves_no_object(s3_root):
    half, whole = f"{layout.MANIFESTS_DIR}/half.parquet", f"{layout.MANIFESTS_DIR}/whole.parquet"
    with pytest.raises(RuntimeError), s3_root.open_atomic(half) as f:
        f.write(b"partial")
        raise RuntimeError("crawler died")
    assert not s3_root.exists(half)
    with s3_root.open_atomic(whole) as f:
        f.write(b"whole")
    assert s3_root.read_bytes(whole) == b"whole"


def test_endpoint_through_storage_options(s3_env, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    root = DataRoot(f"s3://{s3_env.bucket}/opts-{uuid.uuid4().hex[:8]}",
                    storage_options={"endpoint_url": s3_env.endpoint_url})
    root.write_bytes(layout.GRID_CELLS, b"PAR1")
    assert root.read_bytes(layout.GRID_CELLS) == b"PAR1"
    assert root.glob(f"{layout.GRID_DIR}/*") == [layout.GRID_CELLS]


def test_real_crawl_and_merge_into_the_bucket(s3_env, tmp_path):
    """geo_assets.ingest crawls a demo-world cell into the bucket and into a local folder:
    the same manifest bytes, every kept image stored once, the merge reads it back."""
    import collections

    import numpy as np

    from geo_assets.cells import points_to_cells
    from geo_assets.demo import world as demo_world
    from geo_assets.ingest import ingest_cell
    from geo_assets.merge import merge_manifests
    from geo_assets.settings import IngestSettings
    from pipeline.resources import MapillaryResource

    world = demo_world.generate_world(0, "tiny")
    lat = np.array([im.lat for im in world.images])
    lon = np.array([im.lon for im in world.images])
    cell = collections.Counter(points_to_cells(lat, lon, 6)).most_common(1)[0][0]
    s3 = DataRoot(f"s3://{s3_env.bucket}/crawl-{uuid.uuid4().hex[:8]}")
    local = DataRoot(str(tmp_path / "data"))
    settings = IngestSettings(target_per_cell=200, workers=4)
    with MapillaryResource(demo_seed=0, demo_preset="tiny").open_source() as source:
        on_s3 = ingest_cell(source, cell, s3, settings)
        on_disk = ingest_cell(source, cell, local, settings)
    assert on_s3.summary()["version"] == on_disk.summary()["version"]  # same manifest bytes
    assert not s3.glob(layout.cell_journal("*", "*"))
    merged = merge_manifests(s3)
    assert merged.path == s3.uri(layout.IMAGE_MANIFEST)
    with s3.fs.open(s3.path(layout.IMAGE_MANIFEST), "rb") as f:
        table = pq.read_table(f).to_pylist()
    kept = [r for r in table if r["kept"]]
    assert len(table) == merged.n_rows and len(kept) == merged.n_kept > 0
    stored = {rel.rsplit("/", 1)[1].split(".")[0] for rel in s3.glob(f"{layout.IMAGES_DIR}/*/*/*")}
    assert {r["sha256"] for r in kept} <= stored
    for r in kept[:5]:
        assert hashlib.sha256(s3.get_image(r["sha256"])).hexdigest() == r["sha256"]
