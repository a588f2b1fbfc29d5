"""Pieces shared by the widgets: messages, uploads, text lines, image paths, config option names."""

from __future__ import annotations

import html
import io
import logging
from pathlib import Path
from typing import Callable

import ipywidgets as widgets

from clipbench.config import CONF_DIR
from clipbench.errors import ClipbenchError
from clipbench.images import load_image

log = logging.getLogger(__name__)

ERROR_COLOR = "#b00020"
PREVIEW_SIZE_PX = 320


class InputError(ClipbenchError, ValueError):
    """Invalid widget input: nothing uploaded, a missing image path or no text."""


def config_group_names(group: str) -> list[str]:
    """Return the option names of a config group, one per ``conf/<group>/*.yaml`` file, sorted."""
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))


def first_line(err: BaseException) -> str:
    """Return the first non-blank line of an error message, or the error type's name."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def error_html(message: str) -> str:
    """Format a one-line error message for an HTML widget, escaping its text."""
    return f'<span style="color: {ERROR_COLOR}">{html.escape(message)}</span>'


def status_html(message: str) -> str:
    """Format a progress or result note for an HTML widget, escaping its text."""
    return f"<i>{html.escape(message)}</i>"


def non_blank_lines(text: str) -> list[str]:
    """Split text into stripped lines and drop the blank ones."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def uploaded_files(upload: widgets.FileUpload) -> list[tuple[str, bytes]]:
    """Return the (file name, content) pairs of an ipywidgets 8 FileUpload."""
    return [(str(entry["name"]), bytes(entry["content"])) for entry in upload.value]


def read_image_file(text: str) -> tuple[bytes, str]:
    """Read the file named in a path Text; raise InputError with a message for a bad path."""
    if not text.strip():
        raise InputError("Enter the path of an image file.")

    path = Path(text.strip()).expanduser()
    if not path.exists():
        raise InputError(f"Image file not found: {path} (relative paths start at {Path.cwd()}).")
    if path.is_dir():
        raise InputError(f"{path} is a folder: enter the path of an image file inside it.")
    try:
        return path.read_bytes(), path.name
    except OSError as err:
        raise InputError(f"Failed to read {path}: {err.strerror or err}.") from err


def preview_png(image_bytes: bytes, name: str, max_pixels: int | None = None) -> bytes:
    """Decode an image as the library does and return a PNG thumbnail for display."""
    image = load_image(image_bytes, name=name, max_pixels=max_pixels)
    image.thumbnail((PREVIEW_SIZE_PX, PREVIEW_SIZE_PX))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def run_from_button(action: Callable[[], object], message: widgets.HTML, action_name: str) -> None:
    """Call a widget's method from a button and show unexpected errors in ``message``.

    ipywidgets shows an exception from a button callback only in JupyterLab's log
    console, so without this the user would see no reaction at all. The method itself
    shows the expected errors.
    """
    try:
        action()
    except Exception as err:  # a bug: report it where the user looks, keep the traceback in the log
        log.exception("%s failed with an unexpected error", action_name)
        message.value = error_html(
            f"{action_name} failed with an unexpected error: {type(err).__name__}: {first_line(err)}. "
            "The traceback was logged."
        )
