"""Decoding every kind of image file a competition throws at the kit into RGB uint8."""
import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from conftest import write_png
from foldkit.data.images import ImageError, check_image_file, decode_image


@pytest.fixture
def rgb():
    rng = np.random.default_rng(0)
    return (rng.random((12, 20, 3)) * 255).astype(np.uint8)


def test_grey_png_becomes_rgb_or_stays_one_channel(tmp_path):
    g = np.arange(240, dtype=np.uint8).reshape(12, 20)
    p = write_png(tmp_path / "g.png", g)
    out = decode_image(p)
    assert out.shape == (12, 20, 3) and out.dtype == np.uint8
    assert (out[..., 0] == g).all() and (out[..., 2] == g).all()
    grey = decode_image(p, grey=True)
    assert grey.shape == (12, 20, 1) and (grey[..., 0] == g).all()


def test_png_colour_order_is_rgb(tmp_path, rgb):
    p = tmp_path / "c.png"
    Image.fromarray(rgb).save(p)
    assert (decode_image(p) == rgb).all()


def test_rgba_is_composited_on_white(tmp_path):
    a = np.zeros((4, 4, 4), np.uint8)
    a[..., 0] = 200          # red
    a[:2, :, 3] = 255        # top half opaque, bottom half transparent
    p = tmp_path / "a.png"
    Image.fromarray(a, "RGBA").save(p)
    out = decode_image(p)
    assert (out[:2] == [200, 0, 0]).all()
    assert (out[2:] == 255).all()


def test_palette_png_and_gif(tmp_path, rgb):
    im = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    want = np.asarray(im.convert("RGB"))
    for name in ("p.png", "p.gif"):
        im.save(tmp_path / name)
        assert (decode_image(tmp_path / name) == want).all(), name


def test_16bit_png_scaled_to_8bit(tmp_path):
    g16 = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)
    p = write_png(tmp_path / "d.png", g16)
    out = decode_image(p)
    assert out.dtype == np.uint8
    assert np.abs(out[..., 0].astype(int) - np.round(g16 / 257)).max() <= 1


def test_cmyk_jpeg(tmp_path, rgb):
    p = tmp_path / "cmyk.jpg"
    Image.fromarray(rgb).convert("CMYK").save(p, quality=98)
    want = np.asarray(Image.open(p).convert("RGB")).astype(int)
    out = decode_image(p).astype(int)
    assert out.shape == (12, 20, 3)
    assert np.abs(out - want).mean() < 8


def test_exif_rotated_jpeg_is_turned_upright(tmp_path, rgb):
    p = tmp_path / "rot.jpg"
    im = Image.fromarray(rgb)
    exif = im.getexif()
    exif[0x0112] = 6   # orientation: rotate 90 degrees clockwise to display
    im.save(p, exif=exif, quality=98)
    want = np.asarray(ImageOps.exif_transpose(Image.open(p)).convert("RGB")).astype(int)
    out = decode_image(p).astype(int)
    assert out.shape == (20, 12, 3)
    assert np.abs(out - want).mean() < 8


@pytest.mark.parametrize("kind", ["missing", "empty", "truncated_jpg", "truncated_png", "text"])
def test_bad_files_are_named(tmp_path, rgb, kind):
    p = tmp_path / f"bad {kind}.jpg"
    if kind == "empty":
        p.write_bytes(b"")
    elif kind == "truncated_jpg":
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, "JPEG")
        p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    elif kind == "truncated_png":
        p = tmp_path / "bad.png"
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, "PNG")
        p.write_bytes(buf.getvalue()[:-30])
    elif kind == "text":
        p.write_text("this is not an image\n")
    assert check_image_file(p) is not None
    with pytest.raises(ImageError) as e:
        decode_image(p, row=7)
    assert str(p) in str(e.value) and "data row 7" in str(e.value)
    assert "--skip-bad-images" in str(e.value)


def test_large_jpeg_reduced_decode_keeps_orientation_and_min_side(tmp_path):
    rng = np.random.default_rng(1)
    big = np.kron(rng.integers(0, 255, (30, 40, 3)), np.ones((20, 20, 1))).astype(np.uint8)   # 600x800
    p = tmp_path / "big.jpg"
    im = Image.fromarray(big)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(p, exif=exif, quality=95)
    full = decode_image(p)
    small = decode_image(p, min_side=140)          # 600 // 4 = 150 >= 140: a 1/4-size decode
    assert full.shape == (800, 600, 3) and small.shape == (200, 150, 3)
    import cv2
    ref = cv2.resize(full, (150, 200), interpolation=cv2.INTER_AREA).astype(int)
    assert np.abs(small.astype(int) - ref).mean() < 6
    assert decode_image(p, min_side=700).shape == (800, 600, 3)   # no reduction would go below 700
