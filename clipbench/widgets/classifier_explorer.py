"""``ClassifierExplorer``: zero-shot classification of one image against typed labels or ImageNet."""

from __future__ import annotations

import logging

import ipywidgets as widgets

from clipbench.errors import ClipbenchError
from clipbench.plots import figure_png, label_scores_figure
from clipbench.widgets.common import error_html, non_blank_lines, preview_png, run_from_button, status_html
from clipbench.widgets.image_picker import ImagePicker
from clipbench.widgets.model_session import ModelSession

log = logging.getLogger(__name__)

TEMPLATE_SETS = ("simple", "openai")
MAX_TOP_K = 20


class ClassifierExplorer:
    """Image input, candidate labels, top-k, templates and a Classify button; shows the image and a bar chart.

    Empty labels (or only blank lines) mean the manager's class index, the 1000 ImageNet
    classes. ``last_result`` contains the last (label, probability) list, best first, and is
    empty after an error.
    """

    def __init__(self, session: ModelSession | None = None, top_k: int = 5) -> None:
        self.session = session if session is not None else ModelSession()
        self.last_result: list[tuple[str, float]] = []

        self.picker = ImagePicker()
        self.labels = widgets.Textarea(placeholder="One label per line; leave empty for the 1000 ImageNet classes",
                                       description="Labels", rows=6)
        self.top_k = widgets.IntSlider(value=top_k, min=1, max=MAX_TOP_K, description="Top-k")
        initial_templates = self.session.templates if self.session.templates in TEMPLATE_SETS else TEMPLATE_SETS[0]
        self.templates = widgets.Dropdown(options=TEMPLATE_SETS, value=initial_templates, description="Templates")
        self.classify_button = widgets.Button(description="Classify", button_style="primary")
        self.message = widgets.HTML()
        self.status = widgets.HTML()
        self.image = widgets.Image(format="png")
        self.chart = widgets.Image(format="png")
        self.chart.add_class("clipbench-label-chart")

        self.classify_button.on_click(lambda button: run_from_button(self.classify, self.message, "Classification"))

        inputs = widgets.VBox([self.picker.widget, self.labels,
                               widgets.HBox([self.top_k, self.templates, self.classify_button]), self.message, self.status])
        self.widget = widgets.VBox([inputs, widgets.HBox([self.image, self.chart])])

    def classify(self) -> list[tuple[str, float]] | None:
        """Classify the chosen image; return the top-k (label, probability), or None after showing the error."""
        labels = non_blank_lines(self.labels.value) or None
        scope = f"{len(labels)} labels" if labels else "the ImageNet classes (built once per model and templates)"
        self._clear_outputs()
        self.status.value = status_html(f"Classifying against {scope}…")
        self.classify_button.disabled = True
        try:
            return self._classify(labels)
        except (ClipbenchError, ValueError) as err:
            # ImageDecodeError and the widgets' InputError are ClipbenchErrors; the manager
            # raises ValueError for invalid labels or top-k.
            self.message.value = error_html(str(err))
            self.status.value = ""
            return None
        finally:
            self.classify_button.disabled = False

    def _classify(self, labels: list[str] | None) -> list[tuple[str, float]]:
        image_bytes, name = self.picker.selected()
        manager = self.session.manager
        if manager.prompt_set.name != self.templates.value:
            manager.set_templates(self.templates.value)

        result = manager.classify_image_with_labels(image_bytes, labels, top_k=self.top_k.value, name=name)

        candidate_count = len(labels) if labels else len(manager.imagenet_labels)
        title = f"{name}: top {len(result)} of {candidate_count} {'labels' if labels else 'classes'}"
        self.image.value = preview_png(image_bytes, name, manager.max_image_pixels)
        self.chart.value = figure_png(label_scores_figure([label for label, _ in result],
                                                          [score for _, score in result], title=title))
        self.last_result = result
        self.status.value = status_html(f"Best: {result[0][0]} ({result[0][1]:.1%}), templates {manager.prompt_set.name}.")
        return result

    def _clear_outputs(self) -> None:
        self.message.value = ""
        self.image.value = b""
        self.chart.value = b""
        self.last_result = []
