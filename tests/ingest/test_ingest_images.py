"""Image validation: real truncated JPEG, decompression bomb, non-image, EXIF orientation."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

from geo_assets.images import inspect_image, phash_distance
from geo_assets.manifest import DropReason
from geo_assets.settings import ImageSettings
from tests.conftest import shared_data_path
from tests.ingest.ingest_helpers import jpeg_bytes


def real_jpeg() -> bytes:
    folder = shared_data_path("real", "croatia_streetview", "images")
    return min(folder.glob("*.jpg")).read_bytes()


def test_real_photo_is_measured():
    info = inspect_image(real_jpeg())
    assert info.ok and (info.width, info.height) == (640, 640)
    assert 0 < info.brightness < 255 and len(info.phash) == 16


def test_real_truncated_jpeg_is_corrupt():
    data = real_jpeg()
    for cut in (len(data) // 3, len(data) - 200):
        info = inspect_image(data[:cut])
        assert not info.ok and info.drop_reason == DropReason.CORRUPT, cut


def test_non_image_bodies_are_rejected():
    for body in (b"", b"<html><body>Service temporarily unavailable</body></html>",
                 b'{"error": {"code": 4}}'):
        assert inspect_image(body).drop_reason == DropReason.NOT_AN_IMAGE


def _png_with_size(width: int, height: int) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return (struct.pack(">I", len(payload)) + kind + payload
                + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def test_decompression_bomb_is_refused_before_decoding():
    bomb = _png_with_size(100_000, 100_000)  # 10 gigapixels in a 100-byte file
    assert len(bomb) < 200
    assert inspect_image(bomb).drop_reason == DropReason.DECOMPRESSION_BOMB
    small_limit = ImageSettings(max_pixels=100 * 100)
    assert inspect_image(jpeg_bytes(200, 200), small_limit).drop_reason == \
        DropReason.DECOMPRESSION_BOMB


def test_minimum_size():
    assert inspect_image(jpeg_bytes(32, 200)).drop_reason == DropReason.TOO_SMALL
    assert inspect_image(jpeg_bytes(64, 64)).ok


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    info = inspect_image(jpeg_bytes(200, 100, exif=exif.tobytes()))
    assert info.ok and (info.width, info.height) == (100, 200)
    plain = inspect_image(jpeg_bytes(200, 100))
    assert (plain.width, plain.height) == (200, 100)
    assert info.phash != plain.phash  # measured on the upright picture


def test_brightness_is_mean_luminance():
    dark = inspect_image(jpeg_bytes(128, 128, colour=(10, 10, 10)))
    bright = inspect_image(jpeg_bytes(128, 128, colour=(250, 250, 250)))
    assert dark.brightness < 60
    assert bright.brightness > 150


def test_png_with_alpha_is_accepted():
    buf = io.BytesIO()
    Image.new("RGBA", (100, 100), (200, 100, 50, 128)).save(buf, "PNG")
    info = inspect_image(buf.getvalue())
    assert info.ok and info.format == "PNG"


def test_phash_distance():
    assert phash_distance("ff00", "ff01") == 1
    assert phash_distance("0000", "ffff") == 16
