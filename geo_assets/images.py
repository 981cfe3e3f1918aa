"""Image validation and the per-image measurements kept in the manifest.

:func:`inspect_image` decodes every byte of the compressed data (a truncated or damaged file
fails), refuses decompression bombs before decoding, applies the EXIF orientation, enforces a
minimum size, and measures the mean luminance and a 64-bit perceptual hash. JPEGs are decoded
through libjpeg's DCT scaling (``draft``) to at most ``analysis_px`` on the short side: every
entropy-coded block is still read and checked, only the inverse DCT is done at a reduced
scale, which keeps validation several times faster than a full-resolution decode.

:func:`open_image` is the one way geoscout opens an image it did not make (ingest, shards,
``predict``): format allow-list, pixel limit checked from the header before any decode, frame
limit (an animated image gives its first frame), every byte decoded (a truncated file is
refused), EXIF orientation, and 16-bit data scaled to 8 bits (not clipped to white). It
raises :class:`ImageError`, an ``InputError`` that names the input and carries the drop reason.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import imagehash
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from geo_assets.errors import InputError
from geo_assets.manifest import DropReason
from geo_assets.settings import ImageSettings

WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")  # 16/32-bit grey: scale, never clip


class ImageError(InputError):
    """An image that must not be used; ``drop_reason`` says why."""

    def __init__(self, what: str, detail: str, drop_reason: DropReason) -> None:
        super().__init__(f"{what}: {detail}")
        self.detail, self.drop_reason = detail, drop_reason


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
    try:
        frames = getattr(img, "n_frames", 1) if getattr(img, "is_animated", False) else 1
    except Exception as exc:  # noqa: BLE001 - a damaged frame table
        return ImageInfo.rejected(DropReason.CORRUPT, f"unreadable frames: {type(exc).__name__}")
    if frames > settings.max_frames:
        return ImageInfo.rejected(DropReason.DECOMPRESSION_BOMB, f"{frames} frames exceeds the "
                                  f"limit of {settings.max_frames}", width=w, height=h,
                                  format=img.format)
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


def to_8bit(img: Image.Image) -> Image.Image:
    """16- or 32-bit grey as 8-bit grey, scaled by the bit depth (``convert`` would clip)."""
    if img.mode not in WIDE_MODES:
        return img
    arr = np.asarray(img).astype(np.float64)
    top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) <= 65535 else 2**31 - 1
    return Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")


def _luminance(img: Image.Image) -> Image.Image:
    img = to_8bit(img)
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


def open_image(data: bytes, settings: ImageSettings | None = None, *,
               what: str = "image") -> Image.Image:
    """The fully decoded, EXIF-oriented RGB image of ``data`` (first frame of an animation);
    raises :class:`ImageError` naming ``what`` for anything unsafe or damaged."""
    settings = settings or ImageSettings()
    opened = _open(data, settings)
    if isinstance(opened, ImageInfo):
        raise ImageError(what, opened.error, opened.drop_reason)
    try:
        opened.seek(0)
        opened.load()
        img = ImageOps.exif_transpose(to_8bit(opened))
        return img.convert("RGB") if img.mode != "RGB" else img
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(what, f"damaged or truncated image data ({str(exc)[:120]})",
                         DropReason.CORRUPT) from None
    except Image.DecompressionBombError:
        raise ImageError(what, "image too large", DropReason.DECOMPRESSION_BOMB) from None


def check_header(data: bytes, settings: ImageSettings | None = None, *,
                 what: str = "image") -> Image.Image:
    """The opened, not yet decoded image after the format, pixel and frame checks (for
    callers that decode at a reduced scale themselves); raises :class:`ImageError`."""
    opened = _open(data, settings or ImageSettings())
    if isinstance(opened, ImageInfo):
        raise ImageError(what, opened.error, opened.drop_reason)
    return opened


def phash_distance(a: str, b: str) -> int:
    """Hamming distance between two hex perceptual hashes."""
    return (int(a, 16) ^ int(b, 16)).bit_count()
