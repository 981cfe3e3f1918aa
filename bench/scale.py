"""Every metadata stage at 100K, 1M and 5M kept images: wall time and peak memory.

Synthetic manifests in the project's own schema: real MP-16 photo locations
(``../shared/data/coords/geoclip_mp16_coordinates_100K.csv``) resampled as the starts of
Mapillary-like sequences of 5-50 images (about 10 m apart along a wandering heading, the start
jittered by 50 m), about 15% of the rows dropped with reasons, one manifest per level-8 crawl
cell with its stats file, as a crawl leaves them. No pixels.

Each stage runs in a fresh process (``python -m bench.scale --stage S --size N``), which reports
its wall time and peak RSS; stages that need an earlier stage's output read it from the size's
work folder (``bench/out/scale/<N>/``):

- ``merge``: ``geo_assets.merge.merge_manifests`` over the cell manifests;
- ``checks``: the manifest checks on the merged manifest (duplicate ids, coordinates inside
  cells, secrets), without the image decode (no pixels here);
- ``splits``: ``geo_assets.splits.make_splits`` on the kept images;
- ``leakage``: ``geo_assets.split_checks.find_leaks`` on the splits;
- ``hierarchy``: ``fit_hierarchy`` at levels 1/3/5/8 + ``write_hierarchy`` (labels);
- ``remerge``: every 100th cell file crawled again (its last row gone), then the incremental
  merge (``merge`` itself is the merge from scratch: ``incremental=False``);
- ``shards``: shard bookkeeping: ``shard_table`` (from lazy scans), ``plan_build`` (checks,
  build order, plan) and every shard's JSON records and fingerprint, one shard at a time, as
  the writer makes them (no tar written);
- ``reshards``: an incremental re-plan: a previous build's ``contents.parquet`` and
  ``index.json`` (made first, in a process of their own, not measured, as ``shards`` plans
  them: no pixels) and grown inputs (1% new images, new ids and content in a run of crawl
  cells, and 0.5% of the old ones gone), then the grown ``shard_table`` (from lazy scans)
  planned against the previous build (``plan_build``), every
  written shard's records and fingerprint, and the new contents and index
  (``finish_build``; no tar written or read).

Run: ``.venv/bin/python -m bench.scale --sizes 100000 1000000 5000000``. Prints one line per
stage and size, the growth exponent of wall time between consecutive sizes
(log(t2/t1)/log(n2/n1)), and at the end
``RESULT scale_5m peak_gib=<max over stages at the largest size> target=4`` and
``RESULT scale_growth exponent=<worst stage between the two largest sizes> target=1.15``
(named after the largest size run when 5M is not among the sizes).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "scale"
COORDS = ROOT.parent / "shared" / "data" / "coords" / "geoclip_mp16_coordinates_100K.csv"
STAGES = ("merge", "checks", "splits", "leakage", "hierarchy", "shards", "reshards", "remerge")
PREPARE = {"reshards": "reshards_prev"}  # run first, in its own process, not measured
NEW_SHARE, GONE_SHARE = 0.01, 0.005  # reshards: images added and removed
RECRAWLED_SHARE = 100  # remerge: every 100th cell file re-crawled
LEVELS = [1, 3, 5, 8]
KEPT_SHARE = 0.85
CELL_LEVEL = 8


# --- the synthetic crawl ---------------------------------------------------------------------

def _sequences(n_rows: int, seed: int = 0):
    """lat, lon, sequence number and capture time of ``n_rows`` images in sequences."""
    import polars as pl

    coords = pl.read_csv(COORDS)
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, 51, n_rows // 5 + 10)
    lengths = lengths[:np.searchsorted(np.cumsum(lengths), n_rows) + 1]
    seq = np.repeat(np.arange(len(lengths)), lengths)[:n_rows]
    start = rng.integers(0, coords.height, len(lengths))
    km_deg = 111.19
    lat0 = coords["LAT"].to_numpy()[start] + rng.normal(0, 0.05 / km_deg, len(lengths))
    lon0 = coords["LON"].to_numpy()[start]
    heading = rng.uniform(0, 2 * np.pi, len(lengths))[seq] + rng.normal(0, 0.3, n_rows)
    first = np.r_[0, np.cumsum(lengths)[:-1]][seq]
    step_n = np.cos(heading) * 0.010 / km_deg
    step_e = np.sin(heading) * 0.010 / km_deg
    dn = np.cumsum(step_n) - np.cumsum(step_n)[first]
    de = np.cumsum(step_e) - np.cumsum(step_e)[first]
    lat = np.clip(lat0[seq] + dn, -89.999, 89.999)
    lon = (lon0[seq] + de / np.maximum(np.cos(np.radians(lat)), 0.05) + 180) % 360 - 180
    captured = 1_500_000_000_000 + seq * 86_400_000 + (np.arange(n_rows) - first) * 2000
    return lat, lon, seq, captured


def build_crawl(size: int, work: Path) -> None:
    """Cell manifests of ``size`` kept images (and the dropped rows around them)."""
    import polars as pl

    from geo_assets import layout
    from geo_assets.cells import points_to_rowcol, rowcol_to_ids
    from geo_assets.manifest import MANIFEST_SCHEMA, table_to_parquet_bytes

    n_rows = int(size / KEPT_SHARE)
    lat, lon, seq, captured = _sequences(n_rows)
    rows, cols = points_to_rowcol(lat, lon, CELL_LEVEL)
    code = rows.astype(np.int64) * (1 << CELL_LEVEL) + cols
    uniq, inverse = np.unique(code, return_inverse=True)
    cell_ids = rowcol_to_ids(CELL_LEVEL, uniq >> CELL_LEVEL, uniq & ((1 << CELL_LEVEL) - 1))
    rng = np.random.default_rng(1)
    kept = np.zeros(n_rows, bool)
    kept[rng.choice(n_rows, size, replace=False)] = True
    reasons = np.array(["duplicate_location", "sequence_cap", "too_dark", "near_duplicate"])
    idx = pl.int_range(0, n_rows, eager=True)
    frame = pl.DataFrame({
        "image_id": "mapillary:" + idx.cast(pl.String).str.pad_start(10, "0"),
        "source": pl.repeat("mapillary", n_rows, eager=True),
        "source_id": idx.cast(pl.String),
        "group_id": pl.Series(seq).cast(pl.String),
        "creator": pl.repeat("someone", n_rows, eager=True),
        "lat_deg": lat, "lon_deg": lon,
        "captured_at": pl.Series(captured).cast(pl.Datetime("ms", "UTC")),
        "heading_deg": rng.uniform(0, 360, n_rows).astype(np.float32),
        "is_pano": np.zeros(n_rows, bool),
        "cell_id": pl.Series(cell_ids.astype(str))[pl.Series(inverse.ravel())],
        "sha256": idx.cast(pl.String).str.pad_start(20, "0").str.pad_end(64, "a"),
        "file_bytes": rng.integers(50_000, 400_000, n_rows),
        "width": np.full(n_rows, 1024, np.int32), "height": np.full(n_rows, 768, np.int32),
        "brightness": rng.uniform(40, 230, n_rows).astype(np.float32),
        "phash": pl.Series(rng.integers(0, 2**62, n_rows)).cast(pl.String),
        "kept": kept,
        "drop_reason": reasons[rng.integers(0, 4, n_rows)],
        "error": pl.Series([None] * n_rows, dtype=pl.String),
        "license": pl.repeat("CC BY-SA 4.0", n_rows, eager=True),
        "attribution": pl.repeat("Mapillary contributors", n_rows, eager=True)})
    frame = frame.with_columns(drop_reason=pl.when(pl.col("kept")).then(None)
                               .otherwise(pl.col("drop_reason")))
    root = work / "root"
    for (cell,), part in frame.sort("image_id").group_by(["cell_id"]):
        path = root / layout.cell_manifest("mapillary", cell)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(table_to_parquet_bytes(part.to_arrow().cast(MANIFEST_SCHEMA)))
        (root / layout.cell_stats("mapillary", cell)).write_text("{}")
    (work / "built").write_text(json.dumps({"rows": n_rows, "kept": size}))


# --- the stages ------------------------------------------------------------------------------

def _kept(work: Path, columns: list[str]):
    import polars as pl

    from geo_assets import layout

    path = work / "root" / layout.IMAGE_MANIFEST
    return pl.scan_parquet(path).filter(pl.col("kept")).select(columns).collect()


def run_stage(stage: str, work: Path) -> None:
    import polars as pl

    from geo_assets import layout, manifest_checks
    from geo_assets.settings import HierarchySettings, ShardSettings, SplitSettings
    from geo_assets.storage import DataRoot

    if stage == "merge":
        from geo_assets.merge import merge_manifests

        merge_manifests(DataRoot(str(work / "root")), incremental=False)
    elif stage == "checks":
        path = work / "root" / layout.IMAGE_MANIFEST  # as the asset checks read it
        manifest_checks.duplicate_image_ids(pl.read_parquet(path, columns=["image_id"]))
        manifest_checks.coordinates_outside_cells(
            pl.read_parquet(path, columns=manifest_checks.CELL_CHECK_COLUMNS))
        _, hits = manifest_checks.suspicious_texts(pl.scan_parquet(path), ["s3cr3t"])
        manifest_checks.leaked_secrets(hits, ["s3cr3t"])
    elif stage == "splits":
        from geo_assets.splits import make_splits

        table = _kept(work, ["image_id", "source", "group_id", "lat_deg", "lon_deg"])
        make_splits(table, SplitSettings()).splits.write_parquet(work / "splits.parquet")
    elif stage == "leakage":
        from geo_assets.split_checks import find_leaks

        table = pl.read_parquet(work / "splits.parquet").join(
            _kept(work, ["image_id", "source", "lat_deg", "lon_deg"]), on="image_id")
        find_leaks(table, SplitSettings().min_distance_km)
    elif stage == "hierarchy":
        from geo_assets.hierarchy import fit_hierarchy, write_hierarchy

        table = _kept(work, ["image_id", "lat_deg", "lon_deg"]).join(
            pl.read_parquet(work / "splits.parquet", columns=["image_id", "split"]),
            on="image_id")
        lat, lon = table["lat_deg"].to_numpy(), table["lon_deg"].to_numpy()
        settings = HierarchySettings(levels=tuple(LEVELS))
        fitted = fit_hierarchy(lat, lon, (table["split"] == "train").to_numpy(), settings)
        write_hierarchy(fitted, settings, table["image_id"], lat, lon, work / "hierarchy")
    elif stage == "shards":
        from geo_assets.shards import plan_build, plan_fingerprint

        settings = ShardSettings()
        shutil.rmtree(work / "shards", ignore_errors=True)
        plan = plan_build(_shard_input(work), LEVELS, work / "shards", settings)
        for shard in plan.plans:  # every record and fingerprint, as the writer makes them
            plan_fingerprint(shard, settings)
    elif stage == "reshards_prev":
        shutil.rmtree(work / "reshards", ignore_errors=True)
        _replan(_shard_input(work), work / "reshards")
        _grow_inputs(work)
    elif stage == "reshards":
        print(json.dumps(_replan(_shard_input(work, grown=True), work / "reshards")))
    elif stage == "remerge":
        _recrawl(work)
    else:
        raise SystemExit(f"unknown stage {stage!r}: use one of {STAGES}")


def _shard_input(work: Path, grown: bool = False):
    """``shard_table`` from lazy scans, as the ``shards`` asset makes it (``grown``: of the
    inputs ``_grow_inputs`` wrote)."""
    import polars as pl

    from geo_assets import layout
    from geo_assets.shards import shard_table

    paths = [work / "root" / layout.IMAGE_MANIFEST, work / "splits.parquet",
             work / "hierarchy" / layout.LABELS_FILE]
    if grown:
        paths = [work / "grown" / path.name for path in paths]
    manifest = pl.scan_parquet(paths[0]).filter(pl.col("kept"))
    return shard_table(manifest, pl.scan_parquet(paths[1]), pl.scan_parquet(paths[2]),
                       lambda s: s)


def _grow_inputs(work: Path) -> None:
    """Manifest, splits and labels with NEW_SHARE new images (copies of a run of kept rows,
    which are a run of crawl cells in the merged manifest's order, with new ids, content and
    jittered locations) and GONE_SHARE of the kept images removed at random."""
    import polars as pl

    from geo_assets import layout

    dest = work / "grown"
    dest.mkdir(exist_ok=True)
    manifest = pl.scan_parquet(work / "root" / layout.IMAGE_MANIFEST).filter(pl.col("kept")) \
        .select("image_id", "sha256", "lat_deg", "lon_deg", "source", "group_id", "license",
                "attribution", "kept").collect()
    rng = np.random.default_rng(2)
    n_new, n_gone = int(manifest.height * NEW_SHARE), int(manifest.height * GONE_SHARE)
    new_ids = manifest["image_id"].slice(int(rng.integers(0, manifest.height - n_new)), n_new)

    def renamed(frame):
        return frame.filter(pl.col("image_id").is_in(new_ids.implode())).with_columns(
            image_id=pl.col("image_id") + ":new")

    new = renamed(manifest).with_columns(
        sha256=pl.lit("f") + pl.col("sha256").str.slice(1),  # the synthetic digests are digits
        lat_deg=pl.col("lat_deg") + 1e-5, lon_deg=pl.col("lon_deg") - 1e-5)
    gone = np.zeros(manifest.height, bool)
    gone[rng.choice(manifest.height, n_gone, replace=False)] = True
    pl.concat([manifest.filter(~pl.Series(gone)), new]).write_parquet(
        dest / Path(layout.IMAGE_MANIFEST).name)
    for path in (work / "splits.parquet", work / "hierarchy" / layout.LABELS_FILE):
        frame = pl.read_parquet(path)
        pl.concat([frame, renamed(frame)]).write_parquet(dest / path.name)


def _replan(table, out_dir: Path) -> dict:
    """Plan a build of ``table`` against ``out_dir``, make every written shard's records and
    fingerprint and write contents and index as the writer would (stats without tars)."""
    from geo_assets.settings import ShardSettings
    from geo_assets.shards import finish_build, plan_build, plan_fingerprint

    settings, start = ShardSettings(), time.perf_counter()
    plan = plan_build(table, LEVELS, out_dir, settings)
    written = [{"name": p.name, "split": p.split, "fold": p.fold, "count": p.index.len(),
                "bytes": 0, "sha256": plan_fingerprint(p, settings), "failed_image_ids": []}
               for p in plan.plans]
    finish_build(out_dir, plan, written, LEVELS, settings, start)
    return {"written": len(plan.plans), "rewritten": sum(p.rewrite for p in plan.plans),
            "kept": len(plan.kept), "deleted": len(plan.drop)}


def _recrawl(work: Path) -> None:
    """1% of the cells crawled again (each loses its last row), then an incremental merge."""
    import pyarrow.parquet as pq

    from geo_assets.merge import done_cell_manifests, merge_manifests
    from geo_assets.storage import DataRoot

    root = DataRoot(str(work / "root"))
    for path in done_cell_manifests(root)[::RECRAWLED_SHARE]:
        table = pq.read_table(root.local_path(path))
        if table.num_rows > 1:
            pq.write_table(table.slice(0, table.num_rows - 1), root.local_path(path))
    result = merge_manifests(root)
    print(json.dumps({"cells_merged": result.n_cells_merged,
                      "cells_reused": result.n_cells_reused}))  # before the stage line


# --- the driver ------------------------------------------------------------------------------

def peak_rss_gib() -> float:
    """This process's peak resident memory (VmHWM): its own address space only; getrusage's
    ru_maxrss would carry the parent's resident size over fork and exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20  # KiB -> GiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def child(stage: str, size: int) -> None:
    import geo_assets.hierarchy
    import geo_assets.manifest_checks
    import geo_assets.merge
    import geo_assets.shards
    import geo_assets.split_checks  # noqa: F401 - imports are not the stage's time

    start = time.perf_counter()
    run_stage(stage, OUT / str(size))
    peak = peak_rss_gib()
    print(json.dumps({"stage": stage, "size": size, "wall_s": time.perf_counter() - start,
                      "peak_gib": peak}))


def _fresh(stage: str, size: int) -> dict:
    if stage in PREPARE:
        prep = _fresh(PREPARE[stage], size)
        if "error" in prep:
            return {**prep, "stage": stage}
    out = subprocess.run([sys.executable, "-m", "bench.scale", "--stage", stage, "--size",
                          str(size)], cwd=ROOT, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {"stage": stage, "size": size, "wall_s": float("nan"),
                "peak_gib": float("nan"), "error": out.stderr.strip().splitlines()[-1:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _label(size: int) -> str:
    return f"{size // 1_000_000}m" if size % 1_000_000 == 0 else f"{size // 1000}k"


def main(sizes: list[int], stages: tuple[str, ...] = STAGES) -> None:
    if not COORDS.exists():
        raise SystemExit(f"MP-16 coordinates not found at {COORDS}: the benchmark needs them")
    results: dict[tuple[str, int], dict] = {}
    for size in sizes:
        work = OUT / str(size)
        if not (work / "built").exists():
            t = time.perf_counter()
            build_crawl(size, work)
            print(f"built {size} kept images in {time.perf_counter() - t:.0f} s", flush=True)
        for stage in stages:
            r = results[(stage, size)] = _fresh(stage, size)
            print(f"{stage:10s} {size:>9d}  {r['wall_s']:8.1f} s  {r['peak_gib']:6.2f} GiB"
                  + (f"  FAILED {r['error']}" if "error" in r else ""), flush=True)
    worst = -math.inf
    for a, b in itertools.pairwise(sizes):
        for stage in stages:
            ta, tb = results[(stage, a)]["wall_s"], results[(stage, b)]["wall_s"]
            exp = math.log(tb / ta) / math.log(b / a) if ta > 0 and tb > 0 else float("nan")
            print(f"growth {stage:10s} {_label(a)}->{_label(b)} exponent {exp:.2f}")
            if b == sizes[-1]:
                worst = max(worst, exp if not math.isnan(exp) else math.inf)
    peak = max(results[(s, sizes[-1])]["peak_gib"] for s in stages)
    print(f"RESULT scale_{_label(sizes[-1])} peak_gib={peak:.2f} target=4")
    if len(sizes) > 1:  # a growth exponent needs two sizes
        print(f"RESULT scale_growth exponent={worst:.2f} target=1.15")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 5_000_000])
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES),
                        help="the stages to run (default: all); a stage reads the outputs of "
                        "the earlier ones (merge -> splits -> hierarchy -> shards), so run "
                        "those once first")
    parser.add_argument("--stage", choices=[*STAGES, *PREPARE.values()],
                        help="(internal) run one stage")
    parser.add_argument("--size", type=int, help="(internal) the size of that stage")
    args = parser.parse_args()
    if args.stage:
        child(args.stage, args.size)
    else:
        main(sorted(args.sizes), tuple(s for s in STAGES if s in args.stages))
