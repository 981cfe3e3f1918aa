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

import ops_data
from geo_assets import lineage
from geo_assets.manifest import MANIFEST_SCHEMA
from geo_assets.storage import DataRoot

pytestmark = pytest.mark.slow


@pytest.fixture
def s3_root(s3_server, monkeypatch):
    # The endpoint as a deployment would set it (botocore reads it for every S3 client).
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint_url)
    return DataRoot(f"s3://{s3_server.bucket}/{uuid.uuid4().hex[:8]}/data")


@pytest.fixture
def built(s3_root):
    return ops_data.build(s3_root)


def test_images_manifests_and_shards_round_trip(built, s3_server):
    import boto3

    root = built.root
    assert root.uri("x") == f"{root.url}/x" and not root.is_local
    # The objects really are in the bucket (listed with a plain S3 client, not fsspec).
    s3 = boto3.client("s3", endpoint_url=s3_server.endpoint_url)
    prefix = root.base.split("/", 1)[1] + "/"
    keys = {o["Key"][len(prefix):] for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=s3_server.bucket, Prefix=prefix) for o in page.get("Contents", [])}
    assert "manifests/image_manifest.parquet" in keys and "datasets/shards/index.json" in keys
    assert not any(".tmp" in k for k in keys)

    # Raw images: content-addressed, bytes intact, written once.
    images = root.glob("images/*/*/*.jpg")
    assert len(images) == len(built.rows)
    for rel in images:
        digest = rel.rsplit("/", 1)[1].removesuffix(".jpg")
        assert hashlib.sha256(root.read_bytes(rel)).hexdigest() == digest
    assert root.put_image(ops_data.jpeg(0)) == (built.rows[0]["sha256"], False)

    # Manifests: the merged table and every per-cell file read back with the schema.
    with root.fs.open(root.path("manifests/image_manifest.parquet"), "rb") as f:
        table = pq.read_table(f)
    assert table.schema.equals(MANIFEST_SCHEMA, check_metadata=False)
    assert sorted(table.column("image_id").to_pylist()) == sorted(r["image_id"]
                                                                  for r in built.rows)
    assert len(root.glob("manifests/cells/mapillary/*.parquet")) == len(ops_data.CELLS)

    # Shards: every tar listed in the index has its sha256 and the samples of its contents.
    index = json.loads(root.read_bytes("datasets/shards/index.json"))
    assert {s["name"] for s in index["shards"]} == set(built.shards)
    for shard in index["shards"]:
        data = root.read_bytes(f"datasets/shards/{shard['name']}.tar")
        assert hashlib.sha256(data).hexdigest() == shard["sha256"]
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            records = [json.loads(tar.extractfile(m).read()) for m in tar
                       if m.name.endswith(".json")]
        assert sorted(r["image_id"] for r in records) == built.shards[shard["name"]]


def test_shards_stream_with_webdataset_from_the_bucket(built):
    import webdataset as wds

    name = sorted(built.shards)[0]
    url = built.root.uri(f"datasets/shards/{name}.tar")
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
    with pytest.raises(RuntimeError), s3_root.open_atomic("manifests/half.parquet") as f:
        f.write(b"partial")
        raise RuntimeError("crawler died")
    assert not s3_root.exists("manifests/half.parquet")
    with s3_root.open_atomic("manifests/whole.parquet") as f:
        f.write(b"whole")
    assert s3_root.read_bytes("manifests/whole.parquet") == b"whole"


def test_endpoint_through_storage_options(s3_server, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    root = DataRoot(f"s3://{s3_server.bucket}/opts-{uuid.uuid4().hex[:8]}",
                    storage_options={"endpoint_url": s3_server.endpoint_url})
    root.write_bytes("grid/grid_cells.parquet", b"PAR1")
    assert root.read_bytes("grid/grid_cells.parquet") == b"PAR1"
    assert root.glob("grid/*") == ["grid/grid_cells.parquet"]
