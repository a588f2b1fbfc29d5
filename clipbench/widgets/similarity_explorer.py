"""``SimilarityExplorer``: cosine similarities of one image and several texts, or several images and one text."""

from __future__ import annotations

import ipywidgets as widgets
import numpy as np

from clipbench.errors import ClipbenchError
from clipbench.plots import figure_png, similarity_heatmap_figure
from clipbench.samples import sample_photos
from clipbench.similarity import similarity_matrix
from clipbench.widgets.common import (
    InputError,
    error_html,
    non_blank_lines,
    run_from_button,
    status_html,
    uploaded_files,
)
from clipbench.widgets.image_picker import ImagePicker
from clipbench.widgets.model_session import ModelSession

IMAGE_VS_TEXTS = "image_vs_texts"
IMAGES_VS_TEXT = "images_vs_text"
MODES = (("One image, several texts", IMAGE_VS_TEXTS), ("Several images, one text", IMAGES_VS_TEXT))


class SimilarityExplorer:
    """Two modes (``mode``) with their own inputs, a Compute button and a heat map of cosine similarities.

    The matrix has one row per image and one column per text. ``last_matrix`` contains the
    last one and is None after an error.
    """

    def __init__(self, session: ModelSession | None = None) -> None:
        self.session = session if session is not None else ModelSession()
        self.last_matrix: np.ndarray | None = None
        self.photos = sample_photos()

        self.mode = widgets.ToggleButtons(options=MODES, value=IMAGE_VS_TEXTS)

        self.picker = ImagePicker()
        self.texts = widgets.Textarea(placeholder="One text per line", description="Texts", rows=5)
        self.single_image_inputs = widgets.VBox([self.picker.widget, self.texts])

        self.gallery = widgets.SelectMultiple(options=list(self.photos), description="Samples", rows=6)
        self.uploads = widgets.FileUpload(accept="image/*", multiple=True, description="Upload")
        self.text = widgets.Text(placeholder="a photo of a cat", description="Text")
        self.several_images_inputs = widgets.VBox([widgets.HBox([self.gallery, self.uploads]), self.text])

        self.compute_button = widgets.Button(description="Compute", button_style="primary")
        self.message = widgets.HTML()
        self.status = widgets.HTML()
        self.heatmap = widgets.Image(format="png")
        self.heatmap.add_class("clipbench-similarity-heatmap")

        self.mode.observe(lambda change: self._show_mode_inputs(), names="value")
        self.compute_button.on_click(lambda button: run_from_button(self.compute, self.message, "Similarity"))
        self._show_mode_inputs()

        self.widget = widgets.VBox([self.mode, self.single_image_inputs, self.several_images_inputs,
                                    self.compute_button, self.message, self.status, self.heatmap])

    def _show_mode_inputs(self) -> None:
        single_image = self.mode.value == IMAGE_VS_TEXTS
        self.single_image_inputs.layout.display = None if single_image else "none"
        self.several_images_inputs.layout.display = "none" if single_image else None

    def compute(self) -> np.ndarray | None:
        """Compute the similarity matrix of the current mode; return it, or None after showing the error."""
        self.message.value = ""
        self.heatmap.value = b""
        self.last_matrix = None
        self.status.value = status_html("Computing similarities…")
        self.compute_button.disabled = True
        try:
            images, names, texts = self._inputs()
            matrix = similarity_matrix(self.session.manager, images, texts, image_names=names)
        except (ClipbenchError, ValueError) as err:
            # similarity_matrix raises ValueError for no images or an empty text; bad
            # images raise ImageDecodeError, a ClipbenchError.
            self.message.value = error_html(str(err))
            self.status.value = ""
            return None
        finally:
            self.compute_button.disabled = False

        self.heatmap.value = figure_png(similarity_heatmap_figure(matrix, names, texts))
        self.last_matrix = matrix
        self.status.value = status_html(f"{len(images)} image(s) x {len(texts)} text(s).")
        return matrix

    def _inputs(self) -> tuple[list[bytes], list[str], list[str]]:
        """Return the images, their names and the texts of the current mode."""
        if self.mode.value == IMAGE_VS_TEXTS:
            texts = non_blank_lines(self.texts.value)
            if not texts:
                raise InputError("Enter at least one text, one per line.")
            image_bytes, name = self.picker.selected()
            return [image_bytes], [name], texts

        text = self.text.value.strip()
        if not text:
            raise InputError("Enter the text to compare the images with.")
        chosen = [self.photos[name] for name in self.gallery.value]
        uploads = uploaded_files(self.uploads)
        images = [photo.path.read_bytes() for photo in chosen] + [content for _, content in uploads]
        names = [photo.path.name for photo in chosen] + [name for name, _ in uploads]
        return images, names, [text]
