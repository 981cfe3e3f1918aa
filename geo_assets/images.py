"""Image validation and the per-image measurements kept in the manifest.

:func:`inspect_image` decodes every byte of the compressed data (a truncated or damaged file
fails), refuses decompression bombs before decoding, applies the EXIF orientation, enforces a
minimum size, and measures the mean luminance and a 64-bit perceptual hash. JPEGs are decoded
through libjpeg's DCT scaling (``draft``) to at most ``analysis_px`` on the short side: every
entropy-coded block is still read and checked, only the inverse DCT is done at a reduced
scale, which keeps validation several times faster than a full-resolution decode.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import imagehash
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from geo_assets.manifest import DropReason
from geo_assets.settings import ImageSettings


@dataclass(frozen=True)
class ImageInfo:
    """The outcome of validating one image: measurements, or a drop reason and detail."""

    ok: bool
    width: int | None = None            # after EXIF orientation
    height: int | None = None
    brightness: float | None = None     # mean luminance 0..255
    phash: str | None = None            # 16 hex digits
    format: str | None = None
    drop_reason: DropReason | None = None
    error: str | None = None

    @classmethod
    def rejected(cls, reason: DropReason, error: str, **kw) -> ImageInfo:
        return cls(ok=False, drop_reason=reason, error=error, **kw)


ORIENTATION_TAG = 0x0112


def _open(data: bytes, settings: ImageSettings) -> Image.Image | ImageInfo:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:
        if isinstance(exc, UnidentifiedImageError):
            return ImageInfo.rejected(DropReason.NOT_AN_IMAGE, "body is not a recognised image")
        return ImageInfo.rejected(DropReason.DECOMPRESSION_BOMB, "image header too large")
    except Exception as exc:  # noqa: BLE001 - any parser failure means a damaged header
        return ImageInfo.rejected(DropReason.CORRUPT, f"unreadable header: {type(exc).__name__}")
    if img.format not in settings.formats:
        return ImageInfo.rejected(DropReason.NOT_AN_IMAGE, f"unsupported format {img.format}")
    w, h = img.size
    if w * h > settings.max_pixels:
        return ImageInfo.rejected(DropReason.DECOMPRESSION_BOMB,
                                  f"{w}x{h} pixels exceeds the limit of {settings.max_pixels}",
                                  width=w, height=h, format=img.format)
    return img


def _decode(img: Image.Image, settings: ImageSettings) -> Image.Image | ImageInfo:
    """Decode all the data (reduced-scale IDCT for JPEG); reject truncated/corrupt data."""
    if img.format == "JPEG":
        w, h = img.size
        scale = max(1, min(w, h) // max(1, settings.analysis_px))
        img.draft("L" if img.mode in ("RGB", "L") else None,
                  (max(1, w // scale), max(1, h // scale)))
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as exc:
        return ImageInfo.rejected(DropReason.CORRUPT, f"decode failed: {str(exc)[:120]}")
    return img


def _luminance(img: Image.Image) -> Image.Image:
    if img.mode in ("RGBA", "LA", "P", "PA"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("L")


def inspect_image(data: bytes, settings: ImageSettings | None = None) -> ImageInfo:
    """Validate ``data`` as an image and measure it. Never raises on bad input."""
    settings = settings or ImageSettings()
    opened = _open(data, settings)
    if isinstance(opened, ImageInfo):
        return opened
    full_w, full_h = opened.size
    fmt = opened.format
    decoded = _decode(opened, settings)
    if isinstance(decoded, ImageInfo):
        return decoded
    try:
        orientation = decoded.getexif().get(ORIENTATION_TAG, 1)
        oriented = ImageOps.exif_transpose(decoded)
    except Exception:  # noqa: BLE001 - a broken EXIF block is not worth dropping the image
        orientation, oriented = 1, decoded
    if orientation in (5, 6, 7, 8):  # rotated by 90 degrees: width and height swap
        full_w, full_h = full_h, full_w
    if full_w < settings.min_width or full_h < settings.min_height:
        return ImageInfo.rejected(DropReason.TOO_SMALL, f"{full_w}x{full_h} is under the minimum "
                                  f"{settings.min_width}x{settings.min_height}",
                                  width=full_w, height=full_h, format=fmt)
    grey = _luminance(oriented)
    brightness = float(np.asarray(grey, dtype=np.float32).mean())
    phash = str(imagehash.phash(grey))
    return ImageInfo(ok=True, width=full_w, height=full_h, brightness=brightness, phash=phash,
                     format=fmt)


def phash_distance(a: str, b: str) -> int:
    """Hamming distance between two hex perceptual hashes."""
    return (int(a, 16) ^ int(b, 16)).bit_count()
