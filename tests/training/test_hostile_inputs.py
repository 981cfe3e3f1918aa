"""Hostile inputs to training and prediction (issue 14): photos given to ``predict`` pass the
one safe image opener; a damaged checkpoint falls back to the previous good one."""

from __future__ import annotations

import io
import logging
import shutil

import numpy as np
import pytest
from PIL import Image

from pipeline.cli import main as geoscout
from training.checkpoint import CheckpointError
from training.config import TrainConfig
from training.train import main


def _save(path, image, **kw):
    image.save(path, **kw)
    return path


def test_predict_refuses_bombs_and_truncated_data_and_reads_gifs_and_16_bit(tiny_model,
                                                                            tmp_path, capsys):
    bomb = _save(tmp_path / "bomb.png", Image.new("1", (30000, 30000)), format="PNG")
    assert bomb.stat().st_size < 200_000  # a small file declaring 900 million pixels
    buf = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buf, "JPEG")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(buf.getvalue()[:900])
    frames = [Image.new("RGB", (80, 60), (200, 30 * i, 30)) for i in range(4)]
    gif = _save(tmp_path / "anim.gif", frames[0], format="GIF", save_all=True,
                append_images=frames[1:])
    grey16 = _save(tmp_path / "grey16.png",
                   Image.fromarray(np.full((60, 80), 20000, dtype=np.uint16)), format="PNG")
    code = geoscout(["predict", str(bomb), str(truncated), str(gif), str(grey16),
                     "--model", str(tiny_model), "--json"])
    captured = capsys.readouterr()
    assert code == 2
    bomb_line = next(line for line in captured.err.splitlines() if str(bomb) in line)
    assert "not a readable image" in bomb_line
    assert "exceeds the limit" in bomb_line or "too large" in bomb_line
    assert f"{truncated}: not a readable image" in captured.err and "truncated" in captured.err
    assert str(gif) in captured.out and str(grey16) in captured.out


def _config(dataset, out, epochs: int) -> TrainConfig:
    return TrainConfig(dataset=str(dataset / "datasets" / "dataset.json"), output_dir=str(out),
                       epochs=epochs, batch_size=8, workers=0, image_size=32, device="cpu",
                       threads=1, backbone="tiny", pretrained=False, resume="auto")


@pytest.mark.parametrize("damage", [b"", b"garbage, not a checkpoint", "truncate"])
def test_resume_falls_back_from_a_damaged_checkpoint(tiny_dataset, tiny_model, tmp_path,
                                                     caplog, damage):
    run = tmp_path / "run"
    shutil.copytree(tiny_model.parent, run)
    latest = run / "checkpoint.pth"
    assert (run / "checkpoint.prev.pth").exists()  # kept by the run before
    data = latest.read_bytes()
    latest.write_bytes(data[: len(data) // 2] if damage == "truncate" else damage)
    with caplog.at_level(logging.WARNING, logger="geoscout.train"):
        result = main(_config(tiny_dataset, run, epochs=3))
    assert result is not None
    assert any("falling back to" in r.getMessage() and "checkpoint.prev.pth" in r.getMessage()
               for r in caplog.records)


def test_resume_with_nothing_usable_is_a_clear_error(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for name in ("checkpoint.pth", "checkpoint.prev.pth", "best.pth"):
        (run / name).write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="checkpoint.pth is unreadable.*best.pth"):
        main(_config(tiny_dataset, run, epochs=3))
