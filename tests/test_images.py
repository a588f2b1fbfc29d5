"""Tests for clipbench.images: real bad inputs in tests/data/cases and generated images."""

from __future__ import annotations

import io
import logging
import random
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageFile

from clipbench.images import (
    DEFAULT_MAX_IMAGE_PIXELS,
    ImageDecodeError,
    convert_to_rgb,
    describe_source,
    load_image,
)

CASES_DIR = Path(__file__).parent / "data" / "cases"

# Each real case is loaded once from its path and once from its bytes.
INPUT_KINDS = ("path", "bytes")


def load_case(file_name: str, input_kind: str, **kwargs) -> Image.Image:
    path = CASES_DIR / file_name
    if input_kind == "path":
        return load_image(path, **kwargs)
    return load_image(path.read_bytes(), name=file_name, **kwargs)


def reject_case(file_name: str, input_kind: str, **kwargs) -> ImageDecodeError:
    with pytest.raises(ImageDecodeError) as caught:
        load_case(file_name, input_kind, **kwargs)
    return caught.value


def encode(image: Image.Image, image_format: str, **save_kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **save_kwargs)
    return buffer.getvalue()


def load_without_warnings(data: bytes, **kwargs) -> tuple[Image.Image, list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = load_image(data, **kwargs)
    return image, caught


def pixel(image: Image.Image, xy: tuple[int, int] = (0, 0)) -> tuple[int, int, int]:
    return tuple(image.getpixel(xy))


def assert_close(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int) -> None:
    differences = [abs(a - e) for a, e in zip(actual, expected)]
    assert max(differences) <= tolerance, f"{actual} is not within {tolerance} of {expected}"


def assert_no_object_repr(message: str) -> None:
    assert "object at 0x" not in message
    assert "<_io" not in message


def solid_frames(colours: list[tuple[int, int, int]], size: tuple[int, int] = (16, 16)) -> list[Image.Image]:
    return [Image.new("RGB", size, colour) for colour in colours]


FRAME_COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


# ---------------------------------------------------------------------------
# Real cases from tests/data/cases


@pytest.mark.parametrize("input_kind", INPUT_KINDS)
def test_truncated_jpeg_rejected_as_corrupt(input_kind):
    error = reject_case("truncated.jpg", input_kind)

    assert error.reason == "truncated or corrupt"
    assert "truncated.jpg" in error.source
    assert "truncated.jpg" in str(error)
    assert "43,044 bytes" in str(error)
    assert "JPEG" in str(error)
    assert "truncated or corrupt" in str(error)
    assert "Re-export or re-download" in str(error)
    assert_no_object_repr(str(error))


@pytest.mark.parametrize("input_kind", INPUT_KINDS)
def test_zero_bytes_rejected_as_empty(input_kind):
    error = reject_case("zero_bytes.jpg", input_kind)

    assert error.reason == "empty input (0 bytes)"
    assert "zero_bytes.jpg" in str(error)
    assert "empty" in str(error)
    assert "(0 bytes)" in str(error)


@pytest.mark.parametrize("input_kind", INPUT_KINDS)
def test_text_named_jpg_rejected_as_text(input_kind):
    error = reject_case("not_an_image.jpg", input_kind)

    assert error.reason == "not a decodable image"
    assert "not_an_image.jpg" in str(error)
    assert "880 bytes" in str(error)
    assert "content looks like text" in str(error)
    assert "not a decodable image" in str(error)
    assert_no_object_repr(str(error))


@pytest.mark.parametrize("input_kind", INPUT_KINDS)
def test_cmyk_jpeg_matches_rgb_photo(input_kind):
    # cmyk.jpg and photo.webp show the same picture, so their mean colours must agree.
    # An inverted CMYK conversion gives a mean near 255 minus the true one.
    image = load_case("cmyk.jpg", input_kind)
    reference = np.asarray(Image.open(CASES_DIR / "photo.webp").convert("RGB"), dtype=np.float64)
    pixels = np.asarray(image, dtype=np.float64)

    assert image.mode == "RGB"
    assert image.size == (512, 600)
    np.testing.assert_allclose(pixels.mean(axis=(0, 1)), reference.mean(axis=(0, 1)), atol=3.0)
    assert np.abs(pixels - reference).mean() < 6.0


@pytest.mark.parametrize("input_kind", INPUT_KINDS)
def test_palette_transparency_png_no_warnings(input_kind):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = load_case("palette_transparency.png", input_kind)

    assert [str(warning.message) for warning in caught] == []
    assert image.mode == "RGB"
    assert image.size == (512, 600)


def test_palette_transparency_png_composites_white():
    source = Image.open(CASES_DIR / "palette_transparency.png")
    transparent_index = source.info["transparency"]
    indices = np.asarray(source)
    transparent_positions = np.argwhere(indices == transparent_index)

    image = load_image(CASES_DIR / "palette_transparency.png")

    assert len(transparent_positions) > 0
    row, column = transparent_positions[0]
    assert pixel(image, (int(column), int(row))) == (255, 255, 255)


@pytest.mark.parametrize("input_kind", INPUT_KINDS)
@pytest.mark.parametrize(
    ("file_name", "size"),
    [("one_pixel.png", (1, 1)), ("extreme_aspect.png", (4000, 12)), ("photo.webp", (512, 600))],
)
def test_unusual_sizes_and_webp_accepted(file_name, size, input_kind):
    image = load_case(file_name, input_kind)

    assert image.mode == "RGB"
    assert image.size == size


@pytest.mark.parametrize("input_kind", INPUT_KINDS)
def test_animated_gif_uses_first_frame(input_kind):
    frames = []
    with Image.open(CASES_DIR / "animated.gif") as animation:
        for index in range(animation.n_frames):
            animation.seek(index)
            frames.append(np.asarray(animation.convert("RGB")))

    pixels = np.asarray(load_case("animated.gif", input_kind))

    assert len(frames) == 3
    assert np.array_equal(pixels, frames[0])
    assert not np.array_equal(pixels, frames[1])
    assert not np.array_equal(pixels, frames[2])


@pytest.mark.parametrize("input_kind", INPUT_KINDS)
def test_bomb_png_rejected_with_size(input_kind):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        error = reject_case("bomb_20000x20000.png", input_kind)

    assert error.reason == "too many pixels"
    assert "bomb_20000x20000.png" in str(error)
    assert "too many pixels" in str(error)
    assert "20,000 x 20,000" in str(error)
    assert "400,000,000 pixels" in str(error)
    assert f"limit {DEFAULT_MAX_IMAGE_PIXELS:,}" in str(error)
    assert "max_pixels" in str(error)
    assert "runtime.max_image_pixels" in str(error)
    assert [warning for warning in caught if issubclass(warning.category, Image.DecompressionBombWarning)] == []


def test_bomb_png_keeps_pillow_globals():
    max_image_pixels_before = Image.MAX_IMAGE_PIXELS

    with pytest.raises(ImageDecodeError):
        load_image(CASES_DIR / "bomb_20000x20000.png")

    assert Image.MAX_IMAGE_PIXELS == max_image_pixels_before
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


MEMORY_SCRIPT = """
import resource
import sys

from clipbench.images import ImageDecodeError, load_image

small_path, bomb_path = sys.argv[1], sys.argv[2]
load_image(small_path)  # imports every Pillow plugin before the measurement
bomb_bytes = open(bomb_path, "rb").read()

before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
reasons = []
for source in (bomb_path, bomb_bytes):
    try:
        load_image(source)
        reasons.append("accepted")
    except ImageDecodeError as err:
        reasons.append(err.reason.replace(" ", "_"))
after_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

print(*reasons, after_kib - before_kib)
"""


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="resource.getrusage is Unix only")
def test_bomb_png_memory_stays_flat():
    # Decoding the bomb needs 400 MB for its 8-bit greyscale pixels, so a few MiB of
    # peak RSS growth shows that only the header was read.
    completed = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT, str(CASES_DIR / "one_pixel.png"), str(CASES_DIR / "bomb_20000x20000.png")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    path_reason, bytes_reason, growth_kib = completed.stdout.split()

    assert path_reason == "too_many_pixels"
    assert bytes_reason == "too_many_pixels"
    assert int(growth_kib) < 20 * 1024


# ---------------------------------------------------------------------------
# Pixel limit


def test_max_pixels_limit_is_inclusive():
    data = encode(Image.new("RGB", (100, 50), (10, 20, 30)), "PNG")

    image = load_image(data, max_pixels=5000)
    with pytest.raises(ImageDecodeError) as caught:
        load_image(data, max_pixels=4999)

    assert image.size == (100, 50)
    assert caught.value.reason == "too many pixels"
    assert "100 x 50 = 5,000 pixels, limit 4,999" in str(caught.value)


def test_max_pixels_overrides_pillow_limit(monkeypatch):
    # With Pillow's limit at 1,000 pixels, Image.open raises for 64 x 64 and warns for
    # 40 x 40. load_image follows max_pixels only, and lets no bomb warning out.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    large = encode(Image.new("RGB", (64, 64), (1, 2, 3)), "PNG")
    medium = encode(Image.new("RGB", (40, 40), (4, 5, 6)), "PNG")

    large_image, large_warnings = load_without_warnings(large, max_pixels=10_000)
    medium_image, medium_warnings = load_without_warnings(medium, max_pixels=10_000)

    assert large_image.size == (64, 64)
    assert pixel(large_image) == (1, 2, 3)
    assert large_warnings == []
    assert medium_image.size == (40, 40)
    assert medium_warnings == []


def test_max_pixels_below_one_raises():
    with pytest.raises(ValueError, match="max_pixels"):
        load_image(CASES_DIR / "one_pixel.png", max_pixels=0)


def test_default_limit_is_hundred_million():
    assert DEFAULT_MAX_IMAGE_PIXELS == 100_000_000


# ---------------------------------------------------------------------------
# Pixel modes


@pytest.mark.parametrize(
    ("mode", "value", "expected_rgb"),
    [
        ("1", 1, (255, 255, 255)),
        ("1", 0, (0, 0, 0)),
        ("L", 100, (100, 100, 100)),
        ("LA", (100, 255), (100, 100, 100)),
        ("LA", (100, 0), (255, 255, 255)),
        ("LA", (0, 128), (127, 127, 127)),
        ("RGB", (200, 50, 20), (200, 50, 20)),
        ("RGBA", (200, 50, 20, 255), (200, 50, 20)),
        ("RGBA", (200, 50, 20, 0), (255, 255, 255)),
        ("RGBA", (0, 0, 0, 128), (127, 127, 127)),
    ],
)
def test_png_modes_convert_to_rgb(mode, value, expected_rgb):
    data = encode(Image.new(mode, (3, 2), value), "PNG")

    image = load_image(data)

    assert image.mode == "RGB"
    assert image.size == (3, 2)
    assert_close(pixel(image), expected_rgb, tolerance=1)


def palette_image(transparency: int | bytes | None) -> Image.Image:
    image = Image.new("P", (2, 1))
    image.putpalette([200, 50, 20, 0, 0, 255] + [0, 0, 0] * 254)
    image.putdata([0, 1])
    if transparency is not None:
        image.info["transparency"] = transparency
    return image


def test_palette_png_without_transparency():
    image = load_image(encode(palette_image(None), "PNG"))

    assert image.mode == "RGB"
    assert pixel(image, (0, 0)) == (200, 50, 20)
    assert pixel(image, (1, 0)) == (0, 0, 255)


def test_palette_png_transparent_index_white():
    image, caught = load_without_warnings(encode(palette_image(1), "PNG"))

    assert caught == []
    assert pixel(image, (0, 0)) == (200, 50, 20)
    assert pixel(image, (1, 0)) == (255, 255, 255)


def test_palette_png_alpha_bytes_no_warning():
    # Per-entry alpha bytes make Pillow warn on a direct P to RGB conversion.
    data = encode(palette_image(bytes([255, 128])), "PNG")
    reopened = Image.open(io.BytesIO(data))
    with warnings.catch_warnings(record=True) as direct_warnings:
        warnings.simplefilter("always")
        reopened.convert("RGB")

    image, caught = load_without_warnings(data)

    assert isinstance(reopened.info["transparency"], bytes)
    assert len(direct_warnings) == 1
    assert caught == []
    assert pixel(image, (0, 0)) == (200, 50, 20)
    assert_close(pixel(image, (1, 0)), (127, 127, 255), tolerance=1)


def test_grey_png_transparency_entry_white():
    grey = Image.new("L", (2, 1))
    grey.putdata([7, 90])
    data = encode(grey, "PNG", transparency=7)

    image, caught = load_without_warnings(data)

    assert caught == []
    assert pixel(image, (0, 0)) == (255, 255, 255)
    assert pixel(image, (1, 0)) == (90, 90, 90)


SIXTEEN_BIT_RAMP = np.array([[0, 1, 128, 129, 257, 32767, 32768, 65279, 65535]], dtype=np.uint16)
SIXTEEN_BIT_EXPECTED = [0, 0, 0, 1, 1, 127, 128, 254, 255]


def test_sixteen_bit_png_scales_not_clips():
    data = encode(Image.fromarray(SIXTEEN_BIT_RAMP), "PNG")
    reopened_mode = Image.open(io.BytesIO(data)).mode

    grey = np.asarray(load_image(data))[0, :, 0]

    assert reopened_mode == "I;16"
    assert grey.tolist() == SIXTEEN_BIT_EXPECTED


def test_sixteen_bit_full_ramp_monotonic():
    ramp = np.arange(0, 65536, dtype=np.uint16).reshape(256, 256)
    data = encode(Image.fromarray(ramp), "PNG")

    grey = np.asarray(load_image(data))[:, :, 0].ravel().astype(int)

    assert grey[0] == 0
    assert grey[-1] == 255
    assert np.all(np.diff(grey) >= 0)
    assert len(np.unique(grey)) == 256


@pytest.mark.parametrize(("mode", "dtype"), [("I;16", "<u2"), ("I;16L", "<u2"), ("I;16B", ">u2")])
def test_sixteen_bit_modes_scale_alike(mode, dtype):
    raw = SIXTEEN_BIT_RAMP.astype(dtype).tobytes()
    source = Image.frombytes(mode, (SIXTEEN_BIT_RAMP.shape[1], 1), raw)

    grey = np.asarray(convert_to_rgb(source))[0, :, 0]

    assert source.mode == mode
    assert grey.tolist() == SIXTEEN_BIT_EXPECTED


def test_sixteen_bit_big_endian_tiff():
    source = Image.frombytes("I;16B", (SIXTEEN_BIT_RAMP.shape[1], 1), SIXTEEN_BIT_RAMP.astype(">u2").tobytes())
    data = encode(source, "TIFF")
    reopened_mode = Image.open(io.BytesIO(data)).mode

    grey = np.asarray(load_image(data))[0, :, 0]

    assert reopened_mode == "I;16B"
    assert grey.tolist() == SIXTEEN_BIT_EXPECTED


def test_int32_in_16bit_range_scales_16bit():
    values = SIXTEEN_BIT_RAMP.astype(np.int32)
    data = encode(Image.fromarray(values), "TIFF")
    reopened_mode = Image.open(io.BytesIO(data)).mode

    grey = np.asarray(load_image(data))[0, :, 0]

    assert reopened_mode == "I"
    assert grey.tolist() == SIXTEEN_BIT_EXPECTED


def test_int32_outside_16bit_range_stretches():
    values = np.array([[-1000, 0, 1000, 100_000]], dtype=np.int32)
    data = encode(Image.fromarray(values), "TIFF")

    grey = np.asarray(load_image(data))[0, :, 0]

    assert grey.tolist() == [0, 3, 5, 255]


def test_float_image_stretches_data_range():
    values = np.array([[-1.5, 0.5, 2.5, np.nan]], dtype=np.float32)
    data = encode(Image.fromarray(values), "TIFF")
    reopened_mode = Image.open(io.BytesIO(data)).mode

    grey = np.asarray(load_image(data))[0, :, 0]

    assert reopened_mode == "F"
    assert grey.tolist() == [0, 128, 255, 0]


def test_constant_float_image_is_black():
    image = convert_to_rgb(Image.new("F", (2, 2), 3.25))

    assert image.mode == "RGB"
    assert pixel(image) == (0, 0, 0)


def test_cmyk_tiff_uses_pillow_formula():
    source = Image.new("CMYK", (2, 1))
    source.putdata([(0, 0, 0, 0), (255, 0, 0, 0)])

    image = load_image(encode(source, "TIFF"))

    assert pixel(image, (0, 0)) == (255, 255, 255)
    assert pixel(image, (1, 0)) == (0, 255, 255)


def test_ycbcr_tiff_converts_to_rgb():
    source = Image.new("RGB", (2, 2), (200, 50, 20)).convert("YCbCr")

    image = load_image(encode(source, "TIFF"))

    assert image.mode == "RGB"
    assert_close(pixel(image), (200, 50, 20), tolerance=2)


def test_lab_tiff_converts_to_rgb():
    srgb = ImageCms.createProfile("sRGB")
    lab = ImageCms.createProfile("LAB")
    to_lab = ImageCms.buildTransform(srgb, lab, "RGB", "LAB")
    source = ImageCms.applyTransform(Image.new("RGB", (2, 2), (40, 160, 70)), to_lab)

    image = load_image(encode(source, "TIFF"))

    assert source.mode == "LAB"
    assert image.mode == "RGB"
    assert_close(pixel(image), (40, 160, 70), tolerance=6)


@pytest.mark.parametrize(
    ("mode", "value", "expected_rgb"),
    [
        ("HSV", (0, 255, 255), (255, 0, 0)),
        ("HSV", (85, 255, 128), (0, 128, 0)),
        ("RGBa", (100, 25, 10, 128), (227, 152, 137)),
        ("La", (50, 128), (177, 177, 177)),
        ("PA", (0, 0), (255, 255, 255)),
    ],
)
def test_unusual_modes_convert_to_rgb(mode, value, expected_rgb):
    source = Image.new(mode, (2, 2), value)
    if mode == "PA":
        source.putpalette([10, 20, 30] * 256)

    image = convert_to_rgb(source)

    assert image.mode == "RGB"
    assert_close(pixel(image), expected_rgb, tolerance=2)


# ---------------------------------------------------------------------------
# CMYK with an embedded ICC profile


def s15_fixed16(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def constant_cmyk_profile(lab_encoded: tuple[int, int, int]) -> bytes:
    """Build an ICC v2 CMYK printer profile that maps every CMYK value to one Lab colour.

    The profile has a white point and one lut8Type A2B0 tag with identity curves and a
    2-point grid whose 16 entries all hold ``lab_encoded`` (8-bit ICC Lab encoding).
    """
    d50_white = s15_fixed16(0.9642) + s15_fixed16(1.0) + s15_fixed16(0.8249)
    identity_matrix = b"".join(s15_fixed16(1.0 if row == column else 0.0) for row in range(3) for column in range(3))
    a2b0 = (
        b"mft1" + bytes(4) + bytes([4, 3, 2, 0]) + identity_matrix
        + bytes(range(256)) * 4
        + bytes(lab_encoded) * 16
        + bytes(range(256)) * 3
    )
    tags = [(b"A2B0", a2b0), (b"wtpt", b"XYZ " + bytes(4) + d50_white)]

    data_offset = 128 + 4 + 12 * len(tags)
    tag_table = struct.pack(">I", len(tags))
    tag_data = b""
    for signature, payload in tags:
        tag_table += signature + struct.pack(">II", data_offset + len(tag_data), len(payload))
        tag_data += payload + bytes(-len(payload) % 4)

    header = (
        struct.pack(">I", data_offset + len(tag_data)) + bytes(4) + struct.pack(">I", 0x02100000)
        + b"prtr" + b"CMYK" + b"Lab " + bytes(12) + b"acsp" + bytes(24)
        + struct.pack(">I", 0) + d50_white + bytes(48)
    )
    assert len(header) == 128
    return header + tag_table + tag_data


def test_cmyk_jpeg_applies_embedded_profile():
    # Pillow's formula would give about (245, 53, 197) for this CMYK value, while the
    # embedded profile maps every value to the Lab colour of sRGB (40, 160, 70).
    srgb = ImageCms.createProfile("sRGB")
    lab = ImageCms.createProfile("LAB")
    to_lab = ImageCms.buildTransform(srgb, lab, "RGB", "LAB")
    target_lab = ImageCms.applyTransform(Image.new("RGB", (1, 1), (40, 160, 70)), to_lab).getpixel((0, 0))
    source = Image.new("CMYK", (8, 8), (0, 200, 50, 10))
    data = encode(source, "JPEG", icc_profile=constant_cmyk_profile(target_lab))

    image = load_image(data)

    assert image.mode == "RGB"
    assert_close(pixel(image), (40, 160, 70), tolerance=6)


def test_cmyk_jpeg_bad_profile_falls_back(caplog):
    # An sRGB profile does not fit CMYK data, so LittleCMS rejects the transform.
    srgb_bytes = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = encode(Image.new("CMYK", (4, 4), (255, 0, 0, 0)), "JPEG", icc_profile=srgb_bytes, quality=100)

    with caplog.at_level(logging.WARNING, logger="clipbench.images"):
        image = load_image(data)

    assert_close(pixel(image), (0, 255, 255), tolerance=3)
    assert "ICC profile" in caplog.text


# ---------------------------------------------------------------------------
# Animation and orientation


@pytest.mark.parametrize(
    ("image_format", "save_kwargs"),
    [("GIF", {}), ("PNG", {}), ("WEBP", {"lossless": True})],
)
def test_animations_use_first_frame(image_format, save_kwargs):
    frames = solid_frames(FRAME_COLOURS)
    data = encode(frames[0], image_format, save_all=True, append_images=frames[1:], duration=100, **save_kwargs)
    reopened = Image.open(io.BytesIO(data))

    image = load_image(data)

    assert reopened.n_frames == 3
    assert image.size == (16, 16)
    assert pixel(image) == FRAME_COLOURS[0]
    assert getattr(image, "n_frames", 1) == 1


def rotated_jpeg(orientation: int) -> bytes:
    # Left half red, right half blue, stored 40 wide and 20 high.
    source = Image.new("RGB", (40, 20), (255, 0, 0))
    source.paste((0, 0, 255), (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(source, "JPEG", exif=exif, quality=95)


def test_exif_orientation_six_transposes():
    # Orientation 6 means "rotate 90 degrees clockwise to display": the stored left
    # edge (red) becomes the top.
    image = load_image(rotated_jpeg(6))

    assert image.size == (20, 40)
    assert_close(pixel(image, (10, 2)), (255, 0, 0), tolerance=30)
    assert_close(pixel(image, (10, 37)), (0, 0, 255), tolerance=30)


def test_exif_orientation_disabled_keeps_size():
    image = load_image(rotated_jpeg(6), apply_exif_orientation=False)

    assert image.size == (40, 20)
    assert_close(pixel(image, (2, 10)), (255, 0, 0), tolerance=30)


def test_exif_orientation_one_unchanged():
    image = load_image(rotated_jpeg(1))

    assert image.size == (40, 20)


# ---------------------------------------------------------------------------
# Inputs that are not images


NOT_IMAGES = [
    ("page.jpg", b"<!DOCTYPE html>\n<html><body>404 Not Found</body></html>\n", "an HTML page"),
    ("scan.png", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n", "a PDF document"),
    ("archive.webp", b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + bytes(64), "a ZIP archive"),
    ("notes.jpeg", "caption: ein Hund im Schnee, größer als erwartet\n".encode() * 20, "text"),
    ("noise.png", random.Random(0).randbytes(4096), "data in an unknown format"),
]


@pytest.mark.parametrize(("file_name", "content", "description"), NOT_IMAGES)
def test_non_image_bytes_rejected(file_name, content, description):
    with pytest.raises(ImageDecodeError) as caught:
        load_image(content, name=file_name)
    error = caught.value

    assert error.reason == "not a decodable image"
    assert error.source == file_name
    assert f"'{file_name}'" in str(error)
    assert f"{len(content):,} bytes" in str(error)
    assert f"content looks like {description}" in str(error)
    assert_no_object_repr(str(error))


def test_non_image_file_rejected_by_path(tmp_path):
    path = tmp_path / "photo.png"
    path.write_text("<html><head><title>Access denied</title></head></html>")

    with pytest.raises(ImageDecodeError) as caught:
        load_image(path)

    assert caught.value.reason == "not a decodable image"
    assert str(path) in str(caught.value)
    assert "HTML page" in str(caught.value)


def test_heif_header_rejected_as_unsupported():
    content = struct.pack(">I", 24) + b"ftypheic" + bytes(4) + b"mif1heic" + bytes(200)

    with pytest.raises(ImageDecodeError) as caught:
        load_image(content, name="IMG_0001.HEIC")

    assert caught.value.reason == "unsupported image format"
    assert "HEIF" in str(caught.value)
    assert "Convert it to PNG or JPEG" in str(caught.value)


def test_svg_rejected_as_unsupported():
    content = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>\n'

    with pytest.raises(ImageDecodeError) as caught:
        load_image(content, name="logo.svg")

    assert caught.value.reason == "unsupported image format"
    assert "SVG" in str(caught.value)


# ---------------------------------------------------------------------------
# Truncated and corrupt files of other formats


def photo_rgb() -> Image.Image:
    return Image.open(CASES_DIR / "photo.webp").convert("RGB")


@pytest.mark.parametrize("image_format", ["PNG", "GIF", "WEBP", "TIFF", "BMP"])
def test_half_file_rejected_as_corrupt(image_format):
    data = encode(photo_rgb(), image_format)
    half = data[: len(data) // 2]

    with pytest.raises(ImageDecodeError) as caught:
        load_image(half, name=f"half.{image_format.lower()}")

    assert caught.value.reason == "truncated or corrupt"
    assert image_format in str(caught.value)
    assert f"{len(half):,} bytes" in str(caught.value)


@pytest.mark.parametrize(("image_format", "cut_bytes"), [("PNG", 10), ("JPEG", 20), ("GIF", 10)])
def test_header_fragment_rejected_as_corrupt(image_format, cut_bytes):
    fragment = encode(photo_rgb(), image_format)[:cut_bytes]

    with pytest.raises(ImageDecodeError) as caught:
        load_image(fragment)

    assert caught.value.reason == "truncated or corrupt"
    assert image_format in str(caught.value)


def test_damaged_png_data_rejected():
    data = bytearray(encode(photo_rgb(), "PNG"))
    middle = len(data) // 3
    data[middle : middle + 200] = b"Z" * 200

    with pytest.raises(ImageDecodeError) as caught:
        load_image(bytes(data), name="damaged.png")

    assert caught.value.reason == "truncated or corrupt"
    assert "damaged.png" in str(caught.value)


def test_truncated_png_leaves_pillow_setting():
    half = encode(photo_rgb(), "PNG")[:5000]

    with pytest.raises(ImageDecodeError):
        load_image(half)

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


# ---------------------------------------------------------------------------
# Paths, streams and names


def test_missing_path_names_path(tmp_path):
    path = tmp_path / "missing" / "cat.jpg"

    with pytest.raises(ImageDecodeError) as caught:
        load_image(path)

    assert caught.value.reason == "file not found"
    assert caught.value.source == str(path)
    assert str(path) in str(caught.value)
    assert isinstance(caught.value.__cause__, FileNotFoundError)


def test_directory_path_rejected(tmp_path):
    with pytest.raises(ImageDecodeError) as caught:
        load_image(tmp_path)

    assert caught.value.reason == "path is a directory"
    assert str(tmp_path) in str(caught.value)
    assert "directory" in str(caught.value)


def test_string_path_accepted():
    image = load_image(str(CASES_DIR / "one_pixel.png"))

    assert image.size == (1, 1)


def test_file_object_uses_its_name():
    path = CASES_DIR / "truncated.jpg"

    with open(path, "rb") as file:
        with pytest.raises(ImageDecodeError) as caught:
            load_image(file)

    assert caught.value.source == str(path)
    assert str(path) in str(caught.value)


def test_stream_read_from_position():
    data = (CASES_DIR / "one_pixel.png").read_bytes()
    stream = io.BytesIO(b"HEADER" + data)
    stream.seek(len(b"HEADER"))

    image = load_image(stream)

    assert image.size == (1, 1)
    assert image.mode == "RGB"


def test_unnamed_bytes_called_image_bytes():
    with pytest.raises(ImageDecodeError) as caught:
        load_image(io.BytesIO(b"plain words, not pixels"))

    assert caught.value.source == "<image bytes>"
    assert str(caught.value).startswith("Cannot use image bytes (23 bytes,")
    assert_no_object_repr(str(caught.value))


@pytest.mark.parametrize("wrap", [bytearray, memoryview])
def test_bytearray_and_memoryview_accepted(wrap):
    data = (CASES_DIR / "photo.webp").read_bytes()

    image = load_image(wrap(data))

    assert image.size == (512, 600)


def test_text_stream_raises_type_error():
    with pytest.raises(TypeError, match="binary mode"):
        load_image(io.StringIO("not bytes"))


def test_unsupported_source_type_raises():
    with pytest.raises(TypeError, match="int"):
        load_image(42)


def test_describe_source_prefers_name():
    assert describe_source(b"abc", "upload.png") == "upload.png"
    assert describe_source(CASES_DIR / "cmyk.jpg") == str(CASES_DIR / "cmyk.jpg")
    assert describe_source(io.BytesIO(b"abc")) == "<image bytes>"


def test_result_is_detached_rgb_image():
    image = load_image(CASES_DIR / "photo.webp")

    assert type(image) is Image.Image
    assert image.mode == "RGB"
    assert getattr(image, "fp", None) is None


@pytest.mark.parametrize("payload", [b"x", b"hi\n", b"\xff\xd8\xff", b"BM", b"\x00\x00", b"II*"])
def test_few_byte_input_rejected(payload):
    with pytest.raises(ImageDecodeError) as info:
        load_image(payload, name="tiny.jpg")
    assert "tiny.jpg" in str(info.value)
    assert info.value.reason in ("not a decodable image", "truncated or corrupt")
