"""The one image opener's limits, and settings refused at load instead of at crawl time."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from geo_assets.images import ImageError, inspect_image, open_image
from geo_assets.settings import HttpSettings, ImageSettings, IngestSettings
from geo_assets.shards import resize_image


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def test_16_bit_png_brightness_is_scaled_not_clipped():
    mid = png(np.full((96, 128), 32768, dtype=np.uint16))  # half of full scale
    info = inspect_image(mid)
    assert info.ok and info.brightness == pytest.approx(127.5, abs=1.0)
    dark = png(np.full((96, 128), 4000, dtype=np.uint16))
    assert inspect_image(dark).brightness == pytest.approx(4000 / 65535 * 255, abs=1.0)
    # the shard writer sees the same picture, not a white one
    shard = Image.open(io.BytesIO(resize_image(mid, 64, 90)))
    assert np.asarray(shard).mean() == pytest.approx(127.5, abs=3.0)


def test_a_small_file_declaring_huge_dimensions_is_refused_before_decoding():
    buf = io.BytesIO()
    Image.new("1", (30000, 30000)).save(buf, "PNG")
    assert len(buf.getvalue()) < 200_000
    info = inspect_image(buf.getvalue())
    assert info.drop_reason == "decompression_bomb"
    with pytest.raises(ImageError) as err:
        open_image(buf.getvalue(), what="bomb.png")
    assert err.value.drop_reason == "decompression_bomb" and "bomb.png" in str(err.value)
    with pytest.raises(ImageError, match="exceeds the limit"):
        open_image(png(np.zeros((300, 300), np.uint8)), ImageSettings(max_pixels=1000))


def test_truncated_jpeg_is_refused_and_animations_are_limited():
    noise = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "JPEG")
    with pytest.raises(ImageError, match="truncated") as err:
        open_image(buf.getvalue()[:900])
    assert err.value.drop_reason == "corrupt"
    frames = [Image.new("RGB", (64, 64), (10 * i, 0, 0)) for i in range(6)]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:])
    settings = ImageSettings(formats=("GIF",))
    assert open_image(gif.getvalue(), settings).size == (64, 64)  # first frame
    with pytest.raises(ImageError, match="6 frames exceeds the limit of 3"):
        open_image(gif.getvalue(), ImageSettings(formats=("GIF",), max_frames=3))
    assert inspect_image(gif.getvalue()).drop_reason == "not_an_image"  # not an ingest format


@pytest.mark.parametrize("make", [
    lambda: IngestSettings(target_per_cell=-5),
    lambda: IngestSettings(workers=0), lambda: IngestSettings(max_fetch_failure_ratio=2),
    lambda: HttpSettings(deadline_s=0), lambda: HttpSettings(max_body_bytes=-1),
    lambda: ImageSettings(max_pixels=0),
])
def test_bad_settings_fail_at_load(make):
    with pytest.raises(ValueError, match="must"):
        make()


def test_the_dagster_resource_refuses_images_per_cell_zero():
    from pydantic import ValidationError

    from pipeline.resources import GeoscoutSettings

    with pytest.raises(ValidationError, match="images_per_cell must be at least 1"):
        GeoscoutSettings(images_per_cell=0)
