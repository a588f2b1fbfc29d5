"""``ImagePicker``: one image from the sample-photo gallery, an upload or a file path."""

from __future__ import annotations

import ipywidgets as widgets

from clipbench.samples import sample_photos
from clipbench.widgets.common import InputError, read_image_file, uploaded_files

SOURCES = (("Gallery", "gallery"), ("Upload", "upload"), ("Path", "path"))


class ImagePicker:
    """Choose one image; ``source`` selects the input that ``selected`` reads.

    Uploading a file, typing a path or picking a gallery photo switches ``source`` to
    that input, so the last input the user touched is the one used.
    """

    def __init__(self) -> None:
        self.photos = sample_photos()

        self.source = widgets.ToggleButtons(options=SOURCES, value="gallery" if self.photos else "upload",
                                            description="Image from")
        self.gallery = widgets.Dropdown(options=list(self.photos), description="Sample")
        self.upload = widgets.FileUpload(accept="image/*", multiple=False, description="Upload")
        self.path = widgets.Text(placeholder="/path/to/image.jpg", description="Path")

        self.gallery.observe(lambda change: self._select("gallery"), names="value")
        self.upload.observe(self._on_upload, names="value")
        self.path.observe(self._on_path, names="value")

        self.widget = widgets.VBox([self.source, widgets.HBox([self.gallery, self.upload, self.path])])

    def _select(self, source: str) -> None:
        self.source.value = source

    def _on_upload(self, change: dict) -> None:
        if change["new"]:
            self._select("upload")

    def _on_path(self, change: dict) -> None:
        if change["new"].strip():
            self._select("path")

    def selected(self) -> tuple[bytes, str]:
        """Return the chosen image's bytes and file name; raise InputError when none is usable."""
        if self.source.value == "gallery":
            if self.gallery.value is None:
                raise InputError("No sample photo is available: upload an image or enter a path.")
            photo = self.photos[self.gallery.value]
            return photo.path.read_bytes(), photo.path.name

        if self.source.value == "upload":
            files = uploaded_files(self.upload)
            if not files:
                raise InputError("Upload an image first.")
            name, content = files[-1]
            return content, name

        return read_image_file(self.path.value)
