"""Decoding image files: one file -> one uint8 array, and the one preparation every image gets.

`decode_image` turns any image file a competition ships (JPEG incl. CMYK and EXIF rotation, PNG
8/16-bit, grey, alpha, palette, GIF, TIFF, WebP, PNM) into RGB uint8 (H,W,3) or grey (H,W,1), and
names the file (and table row) when it cannot. `check_image_file` is the cheap look without
decoding. `prepare_image` is how training, OOF, test, the offline bundle and one-image
prediction all get an image (see its docstring): what the CV measured is what the submission runs.

Torch-free (the bundle's onnx runner uses it); OpenCV decodes, Pillow covers GIF and rarer formats.
"""
from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np

from foldkit.errors import FoldkitError

# Decoded-pixel limit per image (a 20,000 x 20,000 PNG is 1.2 GB decoded, per worker). Raise it with
# the environment variable below; it is read at decode time, so DataLoader workers see it too.
MAX_PIXELS_ENV = "FOLDKIT_MAX_IMAGE_PIXELS"
DEFAULT_MAX_PIXELS = 100_000_000


class InputError(FoldkitError, ValueError):
    """A problem with the user's input files; the message says what and what to do."""


class ImageError(InputError):
    """An image file that cannot be decoded (missing, empty, truncated, not an image)."""


class TooManyPixelsError(ImageError):
    """An image whose decoded size is over the pixel limit (max_pixels)."""


def _magic_kind(head: bytes) -> str | None:
    if head[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:2] == b"BM":
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:1] == b"P" and head[1:2] in b"123456":
        return "pnm"
    return None


def image_kind(head: bytes) -> str | None:
    """The format a file's first 16 bytes announce (jpeg, png, gif, bmp, tiff, webp, pnm), or None."""
    return _magic_kind(head)


def _content_problem(size: int, head: bytes, tail: bytes) -> str | None:
    """None if a file of `size` bytes starting with `head` and ending with `tail` (its last
    1,024 bytes) looks like a whole image, else the reason."""
    if size == 0:
        return "zero bytes"
    kind = _magic_kind(head)
    if kind is None:
        return "not an image (unknown file signature)"
    if kind == "jpeg" and b"\xff\xd9" not in tail:
        return "truncated (no JPEG end marker)"
    if kind == "png" and b"IEND" not in tail:
        return "truncated (no PNG end chunk)"
    return None


def check_image_file(path: str | Path) -> str | None:
    """Cheap check without decoding: None if the file looks like a whole image,
    else the reason (missing, zero bytes, not an image, truncated).

    Raw os calls (open, fstat, two preads): ~6 us a file, 100k files in well
    under a second. Threads made it slower (the GIL), so it runs serially.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return "missing"
    try:
        size = os.fstat(fd).st_size
        return _content_problem(size, os.pread(fd, 16, 0), os.pread(fd, 1024, max(0, size - 1024)))
    except OSError as e:
        return f"unreadable ({e.strerror})"
    finally:
        os.close(fd)


def _to_uint8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if np.issubdtype(img.dtype, np.floating):
        scale = 255.0 if float(np.nanmax(img)) <= 1.0 else 1.0
        return np.clip(np.nan_to_num(img) * scale + 0.5, 0, 255).astype(np.uint8)
    return np.clip(img, 0, 255).astype(np.uint8)


def _from_pil(data: bytes, path: Path) -> np.ndarray:
    # OpenCV reads no GIF (before 4.11) and a few rarer formats; Pillow comes with torchvision.

    from PIL import Image, ImageOps
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                return _composite_white(np.asarray(im)[..., [2, 1, 0, 3]])[..., ::-1].copy()
            return np.asarray(im.convert("RGB")).copy()
    except Exception as e:  # noqa: BLE001 - any Pillow failure means: not decodable
        raise ImageError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from None


def _composite_white(bgra: np.ndarray) -> np.ndarray:
    """Alpha-composite a BGRA uint8 image onto white (transparent background -> white)."""
    a = bgra[..., 3:4].astype(np.float32) / 255.0
    out = bgra[..., :3].astype(np.float32) * a + 255.0 * (1.0 - a)
    return (out + 0.5).astype(np.uint8)


def _jpeg_size(buf: np.ndarray) -> tuple[int, int] | None:
    """(height, width) from a JPEG's SOF header, None if not found (hand-written: OpenCV has no
    header-only read). Only the markers up to the SOF are read, with no copy of the file."""
    data = memoryview(buf)
    i, n = 2, len(data)
    while i + 9 < n:
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            return (data[i + 5] << 8) | data[i + 6], (data[i + 7] << 8) | data[i + 8]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        i += 2 + ((data[i + 2] << 8) | data[i + 3])
    return None


def _jpeg_reduction(size: tuple[int, int] | None, min_side: int) -> int:
    """Largest libjpeg scale-down (8, 4, 2) that keeps the shortest side >= min_side; 1 if none.

    Decoding a 2592x1944 photo at 1/4 size in the DCT domain is several times faster than a
    full decode followed by a resize."""
    if not min_side or size is None:
        return 1
    for f in (8, 4, 2):
        if min(size) // f >= min_side:
            return f
    return 1


def _image_size(buf: np.ndarray, kind: str) -> tuple[int, int] | None:
    """(height, width) from the file header, without decoding the pixels."""
    if kind == "jpeg":
        return _jpeg_size(buf)
    if kind == "png" and len(buf) >= 24:
        head = buf[16:24].tobytes()
        return int.from_bytes(head[4:8], "big"), int.from_bytes(head[0:4], "big")

    from PIL import Image
    try:
        with Image.open(io.BytesIO(buf.tobytes())) as im:   # lazy: reads the header only
            return im.size[1], im.size[0]
    except Exception:  # noqa: BLE001 - undecodable files are reported by the decoder
        return None


def max_pixels() -> int:
    v = os.environ.get(MAX_PIXELS_ENV, "")
    try:
        return int(float(v)) if v else DEFAULT_MAX_PIXELS
    except ValueError:
        raise InputError(f"{MAX_PIXELS_ENV}={v!r} is not a number of pixels") from None


def to_channels(arr: np.ndarray, grey: bool) -> np.ndarray:
    """uint8 images (..., H, W, C) with 1 channel when grey (ITU-R 601 luma from RGB), else 3."""
    if grey and arr.shape[-1] == 3:
        return np.round(arr @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)[..., None]
    if not grey and arr.shape[-1] == 1:
        return np.repeat(arr, 3, axis=-1)
    return arr


def decode_image(path: str | Path, grey: bool = False, row: int | None = None, min_side: int = 0) -> np.ndarray:
    """Decode an image file into RGB uint8 (H,W,3), or (H,W,1) when grey=True.

    Handles grey, RGBA/LA (composited onto white), palette, 16-bit, CMYK and
    EXIF-rotated JPEGs. min_side > 0 lets a large JPEG decode at 1/2, 1/4 or 1/8 size
    as long as its shortest side stays >= min_side. Missing, zero-byte, truncated or non-image files raise
    ImageError naming the file (and the table row when given).
    """
    import cv2

    path = Path(path)
    where = f"{path}" + (f" (data row {row})" if row is not None else "")
    try:
        buf = np.fromfile(path, dtype=np.uint8)   # the one read of the file
        reason = _content_problem(len(buf), buf[:16].tobytes(), buf[-1024:].tobytes())
    except OSError:
        reason = "missing"
    if reason:
        raise ImageError(f"{where}: {reason}. Fix or remove the file, or pass --skip-bad-images.")
    kind = _magic_kind(buf[:16].tobytes())
    size = _image_size(buf, kind)
    f = _jpeg_reduction(size, min_side) if kind == "jpeg" else 1
    if size is not None and (size[0] // f) * (size[1] // f) > max_pixels():
        raise TooManyPixelsError(f"{where}: {size[1]} x {size[0]} pixels is more than the limit of {max_pixels():,} "
                         f"decoded pixels per image. Resize the file, or raise the limit with the "
                         f"environment variable {MAX_PIXELS_ENV}.")
    img = None
    if kind == "jpeg":
        # IMREAD_COLOR applies EXIF orientation and converts CMYK/YCCK; JPEG is 8-bit.
        flags = {1: (cv2.IMREAD_COLOR, cv2.IMREAD_GRAYSCALE),
                 2: (cv2.IMREAD_REDUCED_COLOR_2, cv2.IMREAD_REDUCED_GRAYSCALE_2),
                 4: (cv2.IMREAD_REDUCED_COLOR_4, cv2.IMREAD_REDUCED_GRAYSCALE_4),
                 8: (cv2.IMREAD_REDUCED_COLOR_8, cv2.IMREAD_REDUCED_GRAYSCALE_8)}[f]
        img = cv2.imdecode(buf, flags[1] if grey else flags[0])
        if img is not None and not grey:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif kind != "gif":
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        if img is not None:
            img = _to_uint8(img)
            if img.ndim == 3 and img.shape[2] == 1:
                img = img[..., 0]
            if img.ndim == 2:
                img = img if grey else cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
            elif img.shape[2] == 4:
                img = cv2.cvtColor(_composite_white(img), cv2.COLOR_BGR2RGB)
            else:
                img = cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2RGB)
    if img is None:
        try:
            img = _from_pil(buf.tobytes(), path)
        except ImageError:
            raise ImageError(f"{where}: cannot decode image (corrupt or unsupported format). "
                             "Fix or remove the file, or pass --skip-bad-images.") from None
    if grey and img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    if grey and img.ndim == 2:
        img = img[..., None]
    return np.ascontiguousarray(img)


# --------------------------------------------------------------------------- the one preparation

def eval_size(data_cfg: dict) -> int:
    """The side of the square a model of this data config is evaluated at (validation/OOF, predict,
    both bundle runners, --image, Grad-CAM): `test_input_size` when trained with --test-img-size
    (FixRes), else the training `input_size`. The one reader of that choice."""
    return int((data_cfg.get("test_input_size") or data_cfg["input_size"])[-1])


def cache_side(data_cfg: dict) -> int:
    """The shortest side every image file is prepared at for a model of this data config: 1.5x the
    larger of the training and evaluation resizes (size / crop_pct), so training crops keep their
    detail and training and evaluation read the same prepared pixels. (The name is from when only the
    RAM cache shrank images; now every path does.)"""
    size = max(data_cfg["input_size"][-1], eval_size(data_cfg))
    return int(math.ceil(size / (data_cfg.get("crop_pct") or 1.0) * 1.5))


def preparation(in_chans: int, data_cfg: dict) -> tuple[bool, int]:
    """(grey, side): how an image is prepared for a model of `in_chans` channels and this data config
    (a checkpoint's `in_chans` and `data_config`). Models with equal preparations share one decode."""
    return in_chans == 1, cache_side(data_cfg)


def shrink(img: np.ndarray, side: int) -> np.ndarray:
    """The image with its shortest side brought down to `side` (OpenCV INTER_AREA); never enlarged."""
    import cv2
    h, w = img.shape[:2]
    s = min(h, w)
    if not side or s <= side:
        return img
    f = side / s
    out = cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    return out[..., None] if out.ndim == 2 else out


def prepare_image(path: str | Path, grey: bool, side: int, row: int | None = None) -> np.ndarray:
    """An image file as every step gives it to a model: decoded (a large JPEG at the libjpeg scale
    that keeps its shortest side >= side), then shrunk to that side. The one preparation of an image
    file for every step, so a submission runs exactly the pipeline the CV measured.
    side 0: full size. Array layouts (numpy, pixel CSV) are used as stored, in every step alike."""
    return shrink(decode_image(path, grey=grey, row=row, min_side=side), side)
