"""Decode user-supplied images into RGB ``PIL.Image.Image`` objects.

Every clipbench entry point that accepts an image calls ``load_image``: the model
manager's single-image requests, evaluation data sets, the gRPC service and the notebook
upload widget. So all of them accept the same inputs and reject bad ones with the same
``ImageDecodeError`` messages.

``load_image`` opens only the image header first, checks the pixel count against
``max_pixels`` and only then decodes the first frame. It never changes Pillow's global
settings (``PIL.Image.MAX_IMAGE_PIXELS``, ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES``).
"""

from __future__ import annotations

import io
import logging
import os
import struct
import warnings
from dataclasses import dataclass
from typing import BinaryIO, Callable, Union

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps

from clipbench.errors import ClipbenchError

try:
    from PIL import ImageCms
except ImportError:  # Pillow built without LittleCMS: CMYK falls back to Pillow's formula.
    ImageCms = None

log = logging.getLogger(__name__)

# 100 million pixels, for example 10,000 x 10,000: about 300 MB once decoded as 8-bit RGB.
# CLIP models resize their input to a few hundred pixels per side, so larger images only
# cost memory. Pillow warns above its own PIL.Image.MAX_IMAGE_PIXELS (89,478,485 pixels in
# Pillow 13) and raises above twice that. Callers raise this limit with the max_pixels
# argument, and evaluation runs with the runtime.max_image_pixels setting.
DEFAULT_MAX_IMAGE_PIXELS = 100_000_000

ImageSource = Union[bytes, bytearray, memoryview, str, os.PathLike, BinaryIO]

_UNNAMED_SOURCE = "<image bytes>"
_PREFIX_BYTES = 512
_WHITE_RGBA = (255, 255, 255, 255)
_MODES_WITH_ALPHA = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})

# Pillow plugins raise these from their header parser when a file is not in their format,
# and Image.open then tries the next plugin.
_NOT_THIS_FORMAT_ERRORS = (SyntaxError, IndexError, TypeError, struct.error)

# Exceptions that Pillow raises from a header parser or a decoder for cut-off or damaged data.
_CORRUPT_DATA_ERRORS = (OSError, ValueError, EOFError, SyntaxError, IndexError, struct.error)


class ImageDecodeError(ClipbenchError, ValueError):
    """Rejected image input; ``str(err)`` is a complete user-facing sentence.

    ``source`` is the file name or path, or ``"<image bytes>"`` when the input has no
    name. ``reason`` is a short fixed phrase for reports, such as "truncated or corrupt",
    "empty input (0 bytes)", "not a decodable image" or "too many pixels".
    """

    def __init__(self, message: str, *, source: str, reason: str) -> None:
        super().__init__(message)
        self.source = source
        self.reason = reason


@dataclass(frozen=True)
class _EncodedImage:
    """One encoded input on a seekable stream, with the label and size that error messages report."""

    stream: BinaryIO
    source: str
    size_bytes: int

    def reject(self, reason: str, problem: str, advice: str = "", detected: str = "") -> ImageDecodeError:
        """Build the error for this input: ``problem`` and ``advice`` are sentence parts."""
        details = f"{self.size_bytes:,} bytes"
        if detected:
            details = f"{details}, {detected}"
        message = f"Cannot use {_subject(self.source)} ({details}): {problem}."
        if advice:
            message = f"{message} {advice}"
        return ImageDecodeError(message, source=self.source, reason=reason)


def load_image(
    source: ImageSource,
    name: str | None = None,
    max_pixels: int | None = None,
    apply_exif_orientation: bool = True,
) -> Image.Image:
    """Decode one image to RGB (fully loaded, file closed).

    ``source`` is a path, encoded image bytes, or a binary stream that is read from its
    current position to the end. ``name`` labels the input in error messages, which
    otherwise use the path, the stream's ``name`` or "image bytes". Animated images give
    their first frame, transparent pixels are composited over white, and 16-bit, 32-bit
    and float images are scaled to 0-255 (see ``convert_to_rgb``).

    Raises ``ImageDecodeError`` for a missing or unreadable path, empty input, content
    that is not an image, a truncated or corrupt image, or more than ``max_pixels``
    pixels (default ``DEFAULT_MAX_IMAGE_PIXELS``), which is checked before decoding.
    """
    if max_pixels is None:
        max_pixels = DEFAULT_MAX_IMAGE_PIXELS
    if max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive number of pixels, got {max_pixels}")

    label = describe_source(source, name)

    if isinstance(source, (str, os.PathLike)):
        with _open_file(source, label) as file:
            encoded = _EncodedImage(file, label, os.fstat(file.fileno()).st_size)
            return _decode(encoded, max_pixels, apply_exif_orientation)

    data = _read_bytes(source)
    encoded = _EncodedImage(io.BytesIO(data), label, len(data))
    return _decode(encoded, max_pixels, apply_exif_orientation)


def describe_source(source: ImageSource, name: str | None = None) -> str:
    """Return the label that messages use for ``source``: ``name``, the path, or a placeholder."""
    if name:
        return name
    if isinstance(source, (str, os.PathLike)):
        return os.fsdecode(source)

    stream_name = getattr(source, "name", None)
    if isinstance(stream_name, str) and stream_name:
        return stream_name
    return _UNNAMED_SOURCE


def convert_to_rgb(image: Image.Image) -> Image.Image:
    """Convert a decoded image of any Pillow mode to a new 8-bit RGB image.

    Alpha and palette transparency are composited over white. 16-bit greyscale
    (``I;16*``) is scaled so 65535 becomes 255. 32-bit integer images (``I``) whose values
    all lie in 0-65535 are scaled the same way, because 16-bit PNG and TIFF data often
    arrive in that mode. Other ``I`` images and all float (``F``) images are stretched from
    their minimum to their maximum value, and a transparency entry on these modes is
    ignored. CMYK uses the embedded ICC profile when there is one.
    """
    if image.mode.startswith("I;16"):
        return _scale_16_bit(image).convert("RGB")
    if image.mode == "I":
        return _scale_32_bit_integer(image).convert("RGB")
    if image.mode == "F":
        return _scale_by_data_range(np.asarray(image)).convert("RGB")
    if image.mode == "CMYK":
        return _cmyk_to_rgb(image)
    if image.mode in _MODES_WITH_ALPHA or "transparency" in image.info:
        return _composite_on_white(image)
    return image.convert("RGB")


def _subject(source: str) -> str:
    if source == _UNNAMED_SOURCE:
        return "image bytes"
    return f"image '{source}'"


def _open_file(path: str | os.PathLike, label: str) -> BinaryIO:
    try:
        return open(path, "rb")
    except FileNotFoundError as err:
        message = f"Cannot use {_subject(label)}: the file does not exist. Check the path."
        raise ImageDecodeError(message, source=label, reason="file not found") from err
    except IsADirectoryError as err:
        message = f"Cannot use {_subject(label)}: the path is a directory, not an image file. Pass the path of one image."
        raise ImageDecodeError(message, source=label, reason="path is a directory") from err
    except PermissionError as err:
        message = f"Cannot use {_subject(label)}: permission denied when opening the file. Check its permissions."
        raise ImageDecodeError(message, source=label, reason="permission denied") from err


def _read_bytes(source: bytes | bytearray | memoryview | BinaryIO) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)

    read = getattr(source, "read", None)
    if read is None:
        raise TypeError(
            f"load_image expects a path, image bytes or a binary file object, got {type(source).__name__}"
        )

    data = read()
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError(f"load_image needs a stream opened in binary mode, but read() returned {type(data).__name__}")
    return bytes(data)


def _decode(encoded: _EncodedImage, max_pixels: int, apply_exif_orientation: bool) -> Image.Image:
    if encoded.size_bytes == 0:
        raise encoded.reject("empty input (0 bytes)", "the input is empty", "Check that the upload or download finished.")

    # The pixel check below replaces Pillow's, so Pillow's DecompressionBombWarning is suppressed.
    # NOTE: before Python 3.14, catch_warnings changes the process-wide filters, so a thread
    # that warns while another is inside this block may have its bomb warning hidden too.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = _open_header(encoded)
        _check_pixel_count(image, encoded, max_pixels)
        _load_first_frame(image, encoded)

    if apply_exif_orientation:
        image = _apply_exif_orientation(image)

    try:
        return convert_to_rgb(image)
    except ValueError as err:
        raise encoded.reject(
            "unsupported pixel mode", f"Pillow cannot convert its pixel mode {image.mode} to RGB", detected=image.format or ""
        ) from err


def _open_header(encoded: _EncodedImage) -> ImageFile.ImageFile:
    """Parse the header with the first Pillow plugin that accepts it, without decoding pixels.

    Image.open would run Pillow's decompression bomb check against the process-wide
    PIL.Image.MAX_IMAGE_PIXELS, which raises without the image size or only warns. Trying
    the registered plugins here, as Image.open does, returns the header for any size, so
    max_pixels alone decides.
    """
    stream = encoded.stream
    prefix = stream.read(_PREFIX_BYTES)

    Image.preinit()
    Image.init()

    for format_id in list(Image.ID):
        factory, accept = Image.OPEN[format_id]
        if not _plugin_accepts(accept, prefix):
            continue

        stream.seek(0)
        try:
            return factory(stream, "")
        except _NOT_THIS_FORMAT_ERRORS:
            continue
        except Image.DecompressionBombError as err:
            raise _reject_pillow_bomb(encoded, err, format_id) from err
        except _CORRUPT_DATA_ERRORS as err:
            log.debug("Pillow's %s plugin rejected the header of %s: %s", format_id, encoded.source, err)
            raise _reject_corrupt(encoded, format_id) from err

    raise _reject_unidentified(encoded, prefix)


def _plugin_accepts(accept: Callable[[bytes], bool | str] | None, prefix: bytes) -> bool:
    # Pillow passes 16 bytes to accept(). A string result names a variant of the format
    # that the plugin recognises but cannot read.
    # Some accept() functions unpack fixed-size fields and fail on inputs of a few bytes.
    if accept is None:
        return True
    try:
        result = accept(prefix[:16])
    except _NOT_THIS_FORMAT_ERRORS:
        return False
    return bool(result) and not isinstance(result, str)


def _check_pixel_count(image: Image.Image, encoded: _EncodedImage, max_pixels: int) -> None:
    width, height = image.size
    pixel_count = width * height
    if pixel_count <= max_pixels:
        return

    problem = (
        f"the image has too many pixels ({width:,} x {height:,} = {pixel_count:,} pixels, "
        f"limit {max_pixels:,})"
    )
    advice = "If you trust this file, raise the limit with load_image(max_pixels=...) or the runtime.max_image_pixels setting."
    raise encoded.reject("too many pixels", problem, advice, detected=image.format or "")


def _load_first_frame(image: ImageFile.ImageFile, encoded: _EncodedImage) -> None:
    # A freshly opened multi-frame image (GIF, APNG, WebP, TIFF) is on frame 0.
    try:
        image.load()
    except Image.DecompressionBombError as err:
        raise _reject_pillow_bomb(encoded, err, image.format or "") from err
    except _CORRUPT_DATA_ERRORS as err:
        log.debug("Pillow failed to decode %s: %s", encoded.source, err)
        raise _reject_corrupt(encoded, image.format or "") from err


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    if orientation in (1, None):
        return image
    return ImageOps.exif_transpose(image)


def _reject_corrupt(encoded: _EncodedImage, format_name: str) -> ImageDecodeError:
    return encoded.reject(
        "truncated or corrupt", "the image is truncated or corrupt", "Re-export or re-download it.", detected=format_name
    )


def _reject_pillow_bomb(encoded: _EncodedImage, err: Image.DecompressionBombError, format_name: str) -> ImageDecodeError:
    # The GIF, MPO and TIFF plugins run Pillow's own check while opening or decoding, and
    # it raises above 2 x PIL.Image.MAX_IMAGE_PIXELS whatever max_pixels allows.
    problem = f"the image has too many pixels for Pillow ({str(err).rstrip('.')})"
    return encoded.reject("too many pixels", problem, "Downscale the image before loading it.", detected=format_name)


def _reject_unidentified(encoded: _EncodedImage, prefix: bytes) -> ImageDecodeError:
    image_format = _sniff_image_format(prefix)
    if image_format in _FORMATS_PILLOW_READS:
        return _reject_corrupt(encoded, image_format)
    if image_format:
        problem = f"this Pillow installation cannot decode {image_format} images"
        return encoded.reject("unsupported image format", problem, "Convert it to PNG or JPEG.", detected=image_format)

    content = _describe_content(prefix)
    return encoded.reject(
        "not a decodable image",
        "it is not a decodable image",
        "Provide an image file such as JPEG, PNG, WebP or GIF.",
        detected=f"content looks like {content}",
    )


# Image signatures, checked when no Pillow plugin could open the input. A format that
# Pillow reads but failed on is reported as truncated or corrupt.
_FORMATS_PILLOW_READS = frozenset({"JPEG", "PNG", "GIF", "WEBP", "TIFF", "AVIF"})
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"mif1", b"msf1"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})


def _sniff_image_format(prefix: bytes) -> str:
    if prefix.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if prefix.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if prefix.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if prefix.startswith(b"RIFF") and prefix[8:12] == b"WEBP":
        return "WEBP"
    if prefix.startswith((b"II*\x00", b"MM\x00*")):
        return "TIFF"

    if prefix[4:8] == b"ftyp":
        brand = prefix[8:12]
        if brand in _AVIF_BRANDS:
            return "AVIF"
        if brand in _HEIF_BRANDS:
            return "HEIF"

    head = prefix.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith(b"<svg") or (head.startswith(b"<?xml") and b"<svg" in head):
        return "SVG"
    return ""


def _describe_content(prefix: bytes) -> str:
    """Name what non-image bytes look like, for example "a PDF document" or "text"."""
    if prefix.startswith(b"%PDF"):
        return "a PDF document"
    if prefix.startswith(b"PK\x03\x04"):
        return "a ZIP archive"
    if prefix.startswith(b"\x1f\x8b"):
        return "a gzip archive"

    head = prefix.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith((b"<!doctype html", b"<html")):
        return "an HTML page"
    if head.startswith(b"<?xml"):
        return "an XML document"
    if _is_text(prefix):
        return "text"
    return "data in an unknown format"


def _is_text(prefix: bytes) -> bool:
    # The prefix may end inside a multi-byte UTF-8 character, so a decode error in the
    # last 3 bytes still counts as text.
    try:
        text = prefix.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(prefix) - 3:
            return False
        text = prefix[: err.start].decode("utf-8")

    if not text:
        return False

    printable_count = sum(character.isprintable() or character in "\t\r\n\f" for character in text)
    return printable_count >= 0.95 * len(text)


def _scale_16_bit(image: Image.Image) -> Image.Image:
    # round(v / 257) maps 0..65535 onto 0..255 and inverts the usual 8-to-16-bit
    # expansion v8 * 257 exactly.
    values = np.asarray(image).astype(np.uint32)
    return Image.fromarray(((values + 128) // 257).astype(np.uint8))


def _scale_32_bit_integer(image: Image.Image) -> Image.Image:
    values = np.asarray(image)
    if values.size and values.min() >= 0 and values.max() <= 65535:
        return Image.fromarray(((values.astype(np.uint32) + 128) // 257).astype(np.uint8))
    return _scale_by_data_range(values)


def _scale_by_data_range(values: np.ndarray) -> Image.Image:
    """Stretch finite values from their minimum to their maximum onto 0-255.

    NaN becomes 0 and infinities clip to 0 or 255. A constant image becomes black,
    because a range of zero gives no scale.
    """
    values = values.astype(np.float64)
    finite = np.isfinite(values)
    if not finite.any():
        return Image.fromarray(np.zeros(values.shape, dtype=np.uint8))

    low = values[finite].min()
    high = values[finite].max()
    if high == low:
        return Image.fromarray(np.zeros(values.shape, dtype=np.uint8))

    scaled = (values - low) * (255.0 / (high - low))
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


def _cmyk_to_rgb(image: Image.Image) -> Image.Image:
    # Pillow's own CMYK formula ignores the printing profile, so colours shift visibly.
    # Profiles of other modes are ignored, like the plain convert("RGB") in OpenCLIP's
    # preprocessing (open_clip/transform.py, version 3.3).
    icc_profile = image.info.get("icc_profile")
    if not icc_profile or ImageCms is None:
        return image.convert("RGB")

    try:
        embedded_profile = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
        return ImageCms.profileToProfile(
            image,
            embedded_profile,
            ImageCms.createProfile("sRGB"),
            renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
            outputMode="RGB",
            flags=ImageCms.Flags.BLACKPOINTCOMPENSATION,
        )
    except (ImageCms.PyCMSError, OSError, ValueError) as err:
        log.warning("Ignored an invalid ICC profile embedded in a CMYK image and used Pillow's CMYK formula: %s", err)
        return image.convert("RGB")


def _composite_on_white(image: Image.Image) -> Image.Image:
    # A direct convert("RGB") drops a transparency entry, and for palette alpha bytes
    # Pillow also warns. Converting to RGBA first turns the entry into alpha.
    if image.mode == "La":
        image = image.convert("LA")
    rgba = image.convert("RGBA")

    background = Image.new("RGBA", rgba.size, _WHITE_RGBA)
    background.alpha_composite(rgba)
    return background.convert("RGB")
