"""Training data from WebDataset shards: decoded, augmented, batched tensors.

Over the ~450-line guide: descriptor, readers (local, fsspec), decoding and the loader are
one pipeline whose stages must stay picklable together; the descriptor is the candidate to
move out.

Pipeline order (webdataset README, "The webdataset Pipeline API")::

    shard list -> shard shuffle -> split_by_node -> split_by_worker -> tarfile_to_samples
               -> sample shuffle -> decode + augment -> batched

Two streams:

- training (``train=True``): ``ResampledShards`` draws shards with replacement, seeded per
  node, worker, epoch and ``seed`` (``set_epoch`` on the loader); an epoch is
  ``epoch_samples`` samples over all nodes (``with_epoch``). Nodes and workers need no shard
  split here: each draws its own stream.
- evaluation (``train=False``): every selected shard once, in name order, split by node then
  by worker, so each sample is seen exactly once over all nodes and workers.

The webdataset tripwires are set on purpose: ``split_by_node`` instead of the raising
``single_node_only``; shard shuffling explicit (seeded for training, none for evaluation);
no empty-worker check (a worker may get no shard when shards < nodes x workers: it just ends),
but an empty shard selection raises ``InputError`` here.

Batches are dicts: ``images`` (N, 3, S, S) float32 normalised with the ImageNet mean/std
(or uint8 with ``normalize=False``), ``labels`` (N, levels) int64 in the descriptor's level
order, ``labels_by_level`` {level: (N,) int64}, ``true_deg`` (N, 2) float64 lat/lon,
``image_ids`` list of str.

Decoding uses ``torchvision.io.decode_jpeg`` straight to uint8 tensors; the random resized
crop runs on uint8 and normalisation once per batch. No horizontal flips: mirroring swaps the
side of the road people drive on, which is a location cue.
"""

from __future__ import annotations

import io
import json
import math
import random
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from PIL import Image
from torchvision.transforms.v2 import functional as tvf

from geo_assets import layout
from geo_assets.errors import InputError
from geo_assets.storage import is_url
from training import sampling

try:  # libjpeg-turbo straight to a tensor: about 2x PIL + numpy (deprecated in 0.29, kept)
    from torchvision.io import ImageReadMode, decode_jpeg
except ImportError:  # pragma: no cover - a torchvision without image io
    decode_jpeg = None
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities",
                        category=DeprecationWarning)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EVAL_CROP_RATIO = 0.875  # evaluation: resize to size / 0.875, centre crop size (224 <- 256)


@dataclass(frozen=True)
class ShardInfo:
    name: str
    url: str
    split: str
    fold: int
    count: int


@dataclass(frozen=True)
class DatasetDescriptor:
    """``datasets/dataset.json`` with its paths resolved."""

    path: Path                            # the URL string for a descriptor on object storage
    levels: tuple[int, ...]
    level_files: dict[int, Path]
    num_classes: dict[int, int]
    shards: tuple[ShardInfo, ...]
    image_size: int                       # stored shorter side of the shard JPEGs
    raw: dict = field(repr=False)

    def select(self, split: str, folds: list[int] | None = None) -> list[ShardInfo]:
        """Shards of ``split`` ("train" or "test"); for train, only ``folds`` (None: all)."""
        if split not in ("train", "test"):
            raise InputError(f"split {split!r} is not 'train' or 'test'")
        chosen = [s for s in self.shards if s.split == split
                  and (folds is None or split == "test" or s.fold in folds)]
        return sorted(chosen, key=lambda s: s.name)

    def count(self, split: str, folds: list[int] | None = None) -> int:
        return sum(s.count for s in self.select(split, folds))

    def folds(self) -> list[int]:
        return sorted({s.fold for s in self.shards if s.split == "train"})

    def train_folds(self, val_fold: int) -> list[int]:
        """The folds to train on when ``val_fold`` validates (k-fold cross-validation)."""
        if val_fold not in self.folds():
            raise InputError(f"validation fold {val_fold} not in the dataset's folds "
                             f"{self.folds()}")
        return [f for f in self.folds() if f != val_fold]


def _resolve(base: Path, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else base / p


def _remote_descriptor(url: str) -> DatasetDescriptor:
    """``dataset.json`` at an fsspec URL (``s3://bucket/root/datasets[/dataset.json]``):
    the shard and level-file locations are URLs beside it (``path`` is the URL string)."""
    import posixpath

    import fsspec

    url = url if url.endswith(".json") else posixpath.join(url, layout.DESCRIPTOR)
    base = posixpath.dirname(url)
    try:
        with fsspec.open(url, "rt") as f:
            raw = json.load(f)
        index_url = posixpath.join(base, raw.get("shard_index", layout.SHARD_INDEX))
        with fsspec.open(index_url, "rt") as f:
            index = json.load(f)
    except FileNotFoundError:
        raise InputError(f"dataset descriptor or shard index under {base} not found: "
                         "materialize the 'shards' asset first") from None
    shards = tuple(ShardInfo(s["name"], posixpath.join(posixpath.dirname(index_url),
                                                       layout.shard_file(s["name"])),
                             s["split"], int(s["fold"]), int(s["count"]))
                   for s in index["shards"])
    levels = tuple(int(v) for v in raw["levels"])
    files = raw.get("level_files", {})
    return DatasetDescriptor(
        url, levels,
        {lv: posixpath.join(base, files.get(str(lv), layout.level_table(lv))) for lv in levels},
        {lv: int(raw.get("num_classes", {}).get(str(lv), 0)) for lv in levels},
        shards, int(index.get("image_size", raw.get("image_size", 256))), raw)


def load_dataset_descriptor(source: str | Path | dict | DatasetDescriptor) -> DatasetDescriptor:
    """Read ``dataset.json`` (a path to it or its folder, an fsspec URL of either, or the
    parsed dict with ``path``)."""
    if isinstance(source, DatasetDescriptor):
        return source
    if isinstance(source, str) and is_url(source):
        return _remote_descriptor(source)
    if isinstance(source, dict):
        raw, path = source, Path(source.get("path", layout.DESCRIPTOR))
    else:
        path = Path(source)
        path = path / layout.DESCRIPTOR if path.is_dir() else path
        if not path.exists():
            raise InputError(f"dataset descriptor {path} not found: materialize the "
                             "'shards' asset first")
        raw = json.loads(path.read_text())
    base = path.parent
    index_path = _resolve(base, raw.get("shard_index", layout.SHARD_INDEX))
    index = json.loads(index_path.read_text())
    shards = tuple(ShardInfo(s["name"], str(index_path.parent / layout.shard_file(s["name"])),
                             s["split"], int(s["fold"]), int(s["count"]))
                   for s in index["shards"])
    levels = tuple(int(v) for v in raw["levels"])
    files = raw.get("level_files", {})
    return DatasetDescriptor(
        path, levels,
        {lv: _resolve(base, files.get(str(lv), layout.level_table(lv))) for lv in levels},
        {lv: int(raw.get("num_classes", {}).get(str(lv), 0)) for lv in levels},
        shards, int(index.get("image_size", raw.get("image_size", 256))), raw)


# --- per-sample and per-batch transforms -------------------------------------------------------

def decode_image(data: bytes) -> torch.Tensor:
    """JPEG bytes -> uint8 tensor (3, H, W)."""
    if decode_jpeg is not None:
        return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8),
                           mode=ImageReadMode.RGB)
    array = np.array(Image.open(io.BytesIO(data)).convert("RGB"))
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def crop_params(height: int, width: int, scale: tuple[float, float],
                ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box (top, left, h, w), drawn with Python's ``random`` (seeded per
    DataLoader worker) instead of one tiny torch op per number."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * random.uniform(*scale)
        aspect = math.exp(random.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return random.randint(0, height - h), random.randint(0, width - w), h, w
    side = min(height, width)  # fallback: the central square
    return (height - side) // 2, (width - side) // 2, side, side


class DecodeSample:
    """A shard sample -> (uint8 image tensor (3, S, S), its JSON record)."""

    def __init__(self, image_size: int, train: bool, scale: tuple[float, float] = (0.35, 1.0)):
        self.image_size = image_size
        self.train = train
        self.scale = scale

    def __call__(self, sample: dict) -> tuple[torch.Tensor, dict]:
        image = decode_image(sample["jpg"])
        size = [self.image_size, self.image_size]
        if self.train:
            top, left, h, w = crop_params(image.shape[-2], image.shape[-1], self.scale)
            image = tvf.resized_crop(image, top, left, h, w, size, antialias=True)
        else:
            short = round(self.image_size / EVAL_CROP_RATIO)
            if min(image.shape[-2:]) != short:
                image = tvf.resize(image, [short], antialias=True)
            image = tvf.center_crop(image, size)
        return image, json.loads(sample["json"])


class CollateBatch:
    """List of (image, record) -> the batch dict (see the module docstring)."""

    def __init__(self, levels: tuple[int, ...], normalize: bool, jitter: float,
                 mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD):
        self.levels = levels
        self.normalize = normalize
        self.jitter = jitter
        self.mean, self.std = tuple(mean), tuple(std)  # the backbone's normalisation

    def __call__(self, samples: list[tuple[torch.Tensor, dict]]) -> dict:
        records = [s[1] for s in samples]
        if self.normalize:
            images = _shared_empty((len(samples), *samples[0][0].shape))
            scale, shift = self._affine([s[0] for s in samples])
            for i, (image, _) in enumerate(samples):  # each image while it is in cache
                images[i].copy_(image).mul_(scale[i]).add_(shift[i])
        else:
            images = torch.stack([s[0] for s in samples])
        labels = torch.tensor([[r["labels"][str(lv)] for lv in self.levels] for r in records],
                              dtype=torch.long)
        return {"images": images, "labels": labels,
                "labels_by_level": {lv: labels[:, i] for i, lv in enumerate(self.levels)},
                "true_deg": torch.tensor([[r["lat_deg"], r["lon_deg"]] for r in records],
                                         dtype=torch.float64),
                "image_ids": [r["image_id"] for r in records]}

    def _affine(self, images: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per image (scale, shift) with ``x * scale + shift`` = normalised float from uint8
        ``x``: folds /255, brightness and contrast jitter (one factor pair per image, around
        the image's mean grey level) and the ImageNet mean/std."""
        n = len(images)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        scale = (1.0 / 255.0) / std.expand(n, 3, 1, 1)
        shift = (-mean / std).expand(n, 3, 1, 1)
        if self.jitter > 0:  # x' = b * (c * (x - m) + m)
            b = 1 + self.jitter * (2 * torch.rand(n, 1, 1, 1) - 1)
            c = 1 + self.jitter * (2 * torch.rand(n, 1, 1, 1) - 1)
            m = torch.stack([x[:, ::8, ::8].float().mean() for x in images]).view(n, 1, 1, 1)
            scale = scale * (b * c)
            shift = (b * m / 255.0 * (1 - c) - mean) / std
        return scale, shift


def _shared_empty(shape) -> torch.Tensor:
    """A float tensor, in shared memory when in a DataLoader worker (as default_collate
    does), so that the worker does not copy the batch again to hand it over."""
    if torch.utils.data.get_worker_info() is None:
        return torch.empty(shape)
    numel = math.prod(shape)
    storage = torch.empty(0)._typed_storage()._new_shared(numel, device="cpu")
    return torch.empty(0).new(storage).resize_(*shape)


# --- reading shards ------------------------------------------------------------------------------

TAR_BLOCK = 512


def _local_tar_members(path: str) -> list[tuple[str, bytes]]:
    """(name, bytes) of each regular file of a plain ustar tar, parsed with slicing: about
    10x less Python per member than ``tarfile``. Anything unusual (pax or GNU headers, links,
    name prefixes) raises ValueError before anything is returned."""
    with open(path, "rb") as f:
        data = f.read()
    view = memoryview(data)
    members, pos = [], 0
    while pos + TAR_BLOCK <= len(data):
        header = data[pos:pos + TAR_BLOCK]
        if header[:1] == b"\0":
            break  # end-of-archive blocks
        kind = header[156:157]
        if kind not in (b"0", b"\0") or header[345:346] != b"\0":
            raise ValueError(f"{path}: tar member type {kind!r} or prefix needs tarfile")
        name = header[:100].split(b"\0", 1)[0].decode()
        size = int(header[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
        start = pos + TAR_BLOCK
        members.append((name, bytes(view[start:start + size])))
        pos = start + (size + TAR_BLOCK - 1) // TAR_BLOCK * TAR_BLOCK
    return members


def _local_tar_samples(url: str):
    sample: dict = {}
    for name, payload in _local_tar_members(url):
        key, ext = name.split(".", 1)
        if sample and sample["__key__"] != key:
            yield sample
            sample = {}
        sample.setdefault("__key__", key)
        sample["__url__"] = url
        sample[ext] = payload
    if sample:
        yield sample


def _fsspec_tar_samples(url: str, handler):
    """Samples of a shard at an fsspec URL (``s3://``, ``gs://``...), streamed through
    webdataset's tar expander (webdataset's own opener knows no object-store schemes)."""
    import fsspec

    with fsspec.open(url, "rb") as stream:
        members = wds.tariterators.tar_file_expander([{"stream": stream, "url": url}],
                                                     handler=handler)
        yield from wds.tariterators.group_by_keys(members, handler=handler)


class TarSamples:
    """Pipeline stage: shard dicts (``url``) -> samples. Local shards use the fast reader
    (falling back to webdataset's for anything but plain ustar); object-store URLs are read
    through fsspec; ``pipe:`` / ``http(s)`` URLs go to webdataset. A class, not a closure, so
    that spawned loader workers can pickle the pipeline."""

    def __init__(self, handler=wds.reraise_exception):
        self.handler = handler

    def __call__(self, src):
        generic = wds.tarfile_to_samples(handler=self.handler)
        for item in src:
            url = item["url"]
            if "://" in url and not url.startswith("file://"):
                scheme = url.split("://", 1)[0]
                remote = scheme not in ("http", "https", "pipe")
                yield from (_fsspec_tar_samples(url, self.handler) if remote
                            else generic([item]))
                continue
            try:
                yield from _local_tar_samples(url.removeprefix("file://"))
            except ValueError:
                yield from generic([item])


tar_samples = TarSamples


# --- the stream ----------------------------------------------------------------------------------

class WorkerSeed:
    """Seed per node, worker and epoch (``set_epoch`` changes it before workers start)."""

    def __init__(self, seed: int):
        self.seed = seed
        self.epoch = 0

    def __call__(self) -> int:
        rank, _, worker, _ = wds.utils.pytorch_worker_info()
        return wds.utils.make_seed(self.seed, self.epoch, rank, worker)


class _SeededShuffle:
    """Buffer shuffle (as webdataset's) whose RNG is seeded when the worker starts reading;
    a class, not a closure, so that spawned loader workers can pickle it."""

    def __init__(self, bufsize: int, seeder: WorkerSeed, initial: int = 100):
        self.bufsize, self.seeder, self.initial = bufsize, seeder, initial

    def __call__(self, src):
        bufsize = self.bufsize
        rng = random.Random(self.seeder())
        src = iter(src)
        buf: list = []
        for sample in src:
            buf.append(sample)
            if len(buf) < bufsize:  # grow the buffer two samples per yield up to bufsize
                extra = next(src, None)
                if extra is not None:
                    buf.append(extra)
            if len(buf) >= min(self.initial, bufsize):
                i = rng.randrange(len(buf))
                buf[i], buf[-1] = buf[-1], buf[i]
                yield buf.pop()
        rng.shuffle(buf)
        yield from buf


_seeded_shuffle = _SeededShuffle


def make_pipeline(urls: list[str], levels: tuple[int, ...], *, image_size: int, batch_size: int,
                  train: bool, seeder: WorkerSeed, shuffle_buffer: int = 1000,
                  normalize: bool = True, jitter: float = 0.2,
                  handler=wds.reraise_exception, mean: tuple[float, ...] = IMAGENET_MEAN,
                  std: tuple[float, ...] = IMAGENET_STD, balance=None,
                  crop_scale: tuple[float, float] = (0.35, 1.0)) -> wds.DataPipeline:
    """The webdataset pipeline (one per DataLoader worker); ``balance``: (keep probability per
    class, level) for class-balanced thinning (training/sampling.py)."""
    if not urls:
        raise InputError("no shards selected: check the split and folds against dataset.json")
    if train:  # shard shuffle = resampling, seeded per node/worker/epoch: no split needed
        source = [wds.ResampledShards(urls, seed=seeder.seed, worker_seed=seeder,
                                      deterministic=True, empty_check=False)]
    else:  # each shard once: in name order, split by node, then by worker
        source = [wds.SimpleShardList(urls), wds.split_by_node, wds.split_by_worker]
    stages = [*source, tar_samples(handler)]
    if train and balance is not None:
        stages.append(sampling.balance_stage(*balance, seeder))
    if train:
        stages.append(_seeded_shuffle(shuffle_buffer, seeder))
    stages += [wds.map(DecodeSample(image_size, train, crop_scale), handler=handler),
               wds.batched(batch_size, collation_fn=CollateBatch(
                   levels, normalize, jitter if train else 0.0, mean, std), partial=not train)]
    return wds.DataPipeline(*stages)


class GeoLoader(wds.WebLoader):
    """A ``WebLoader`` with ``set_epoch`` (re-seeds the training stream per epoch)."""

    def set_epoch(self, epoch: int) -> None:
        self.seeder.epoch = int(epoch)


def make_loader(dataset, split: str = "train", folds: list[int] | None = None, *,
                image_size: int, batch_size: int, num_workers: int, train: bool = True, epoch_samples: int | None = None, seed: int = 0,
                shuffle_buffer: int = 1000, normalize: bool = True,
                handler=wds.reraise_exception, mean: tuple[float, ...] = IMAGENET_MEAN,
                std: tuple[float, ...] = IMAGENET_STD, class_balance: float = 0.0,
                augment: str = "standard") -> GeoLoader:
    """A DataLoader over the shards of ``split`` / ``folds`` of a dataset descriptor.

    ``train=True``: infinite resampled stream cut into epochs of ``epoch_samples`` samples
    over all nodes (default: the selected shards' sample count), full batches only.
    ``train=False``: each selected sample once over all nodes and workers, last batch partial.
    ``class_balance`` and ``augment``: training-stream options (training/sampling.py).
    """
    desc = load_dataset_descriptor(dataset)
    urls = [s.url for s in desc.select(split, folds)]
    seeder = WorkerSeed(seed)
    finest = desc.levels[-1]
    balance = (sampling.keep_probabilities(desc.level_files[finest], class_balance), finest) \
        if train and class_balance > 0 else None
    aug = sampling.augmentation(augment)
    pipeline = make_pipeline(urls, desc.levels, image_size=image_size, batch_size=batch_size,
                             train=train, seeder=seeder, shuffle_buffer=shuffle_buffer,
                             normalize=normalize, handler=handler, mean=mean, std=std,
                             balance=balance, crop_scale=aug["scale"], jitter=aug["jitter"])
    _, world, _, _ = wds.utils.pytorch_worker_info()
    workers = max(1, num_workers)
    if train:
        total = epoch_samples or desc.count(split, folds)
        per_worker = max(1, math.ceil(total / (batch_size * workers * world)))
        pipeline = pipeline.with_epoch(per_worker)
    loader = GeoLoader(pipeline, batch_size=None, num_workers=num_workers,
                       persistent_workers=False, pin_memory=torch.cuda.is_available())
    loader.seeder = seeder
    if train:
        loader = loader.with_length(per_worker * workers, silent=True)
    return loader
