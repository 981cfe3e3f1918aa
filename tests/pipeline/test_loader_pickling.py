"""Loader pipelines pickle, so loader workers started with ``spawn`` (as under Dagster's
multiprocess executor) get them: "Can't pickle local object 'tar_samples.<locals>.stage'"."""

from __future__ import annotations

import pickle

import pytest
import torch

from tests.training.tiny_dataset import build_tiny_dataset
from training.data import WorkerSeed, load_dataset_descriptor, make_pipeline


@pytest.fixture(scope="module")
def descriptor(tmp_path_factory):
    out = tmp_path_factory.mktemp("pickling") / "datasets"
    build_tiny_dataset(out)
    return out / "dataset.json"


def pipeline(descriptor, train: bool):
    desc = load_dataset_descriptor(descriptor)
    urls = [s.url for s in desc.select("train" if train else "test", None)]
    return make_pipeline(urls, desc.levels, image_size=32, batch_size=4, train=train,
                         seeder=WorkerSeed(0), shuffle_buffer=8)


@pytest.mark.parametrize("train", [True, False])
def test_pipeline_pickles(descriptor, train):
    stream = pipeline(descriptor, train)
    assert type(pickle.loads(pickle.dumps(stream))) is type(stream)


def test_spawned_loader_worker_reads_batches(descriptor):
    loader = torch.utils.data.DataLoader(pipeline(descriptor, False), batch_size=None,
                                         num_workers=1, multiprocessing_context="spawn")
    spawned = sum(len(batch["images"]) for batch in loader)
    assert spawned > 0
    assert spawned == sum(len(batch["images"]) for batch in pipeline(descriptor, False))
