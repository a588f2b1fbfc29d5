"""Matplotlib figures of clipbench results, shared by the notebooks and the widgets.

Every function returns a ``matplotlib.figure.Figure`` built without pyplot's global state,
so figures can be made in worker threads and converted to PNG with ``figure_png``.
"""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from PIL import Image


def figure_png(figure: Figure, dpi: int = 100) -> bytes:
    """Render a figure to PNG bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def label_scores_figure(labels: Sequence[str], scores: Sequence[float], title: str = "") -> Figure:
    """Horizontal bar chart of label probabilities, best label on top."""
    figure = Figure(figsize=(5.5, 0.45 * len(labels) + 1.0))
    axes = figure.add_subplot()
    positions = np.arange(len(labels))
    axes.barh(positions, scores, color="#3b75af")
    axes.set_yticks(positions, labels=list(labels))
    axes.invert_yaxis()
    axes.set_xlim(0, 1)
    axes.set_xlabel("probability")
    for position, score in zip(positions, scores):
        axes.text(min(score + 0.01, 0.9), position, f"{score:.1%}", va="center", fontsize=9)
    if title:
        axes.set_title(title)
    figure.tight_layout()
    return figure


def similarity_heatmap_figure(similarities: np.ndarray, row_labels: Sequence[str], column_labels: Sequence[str],
                              title: str = "cosine similarity") -> Figure:
    """Heat map of a similarity matrix with each value written in its cell."""
    rows, columns = similarities.shape
    figure = Figure(figsize=(1.4 * columns + 2.5, 0.6 * rows + 1.8))
    axes = figure.add_subplot()
    image = axes.imshow(similarities, cmap="viridis", aspect="auto")
    axes.set_xticks(range(columns), labels=list(column_labels), rotation=30, ha="right")
    axes.set_yticks(range(rows), labels=list(row_labels))
    midpoint = (similarities.max() + similarities.min()) / 2
    for row in range(rows):
        for column in range(columns):
            value = similarities[row, column]
            axes.text(column, row, f"{value:.3f}", ha="center", va="center",
                      color="black" if value > midpoint else "white", fontsize=9)
    figure.colorbar(image, ax=axes)
    axes.set_title(title)
    figure.tight_layout()
    return figure


def per_class_accuracy_figure(classnames: Sequence[str], accuracies: Sequence[float], max_classes: int = 40) -> Figure:
    """Bar chart of per-class accuracy, worst classes first (at most ``max_classes`` bars)."""
    order = np.argsort(accuracies)[:max_classes]
    figure = Figure(figsize=(6, 0.3 * len(order) + 1.2))
    axes = figure.add_subplot()
    axes.barh(np.arange(len(order)), [accuracies[i] for i in order], color="#d1743b")
    axes.set_yticks(np.arange(len(order)), labels=[classnames[i] for i in order], fontsize=8)
    axes.invert_yaxis()
    axes.set_xlim(0, 1)
    axes.set_xlabel("accuracy")
    axes.set_title("per-class accuracy (worst first)" if len(order) < len(classnames) else "per-class accuracy")
    figure.tight_layout()
    return figure


def image_grid_figure(images: Sequence[Image.Image], captions: Sequence[str], columns: int = 4) -> Figure:
    """Grid of images with a caption under each (misclassified examples, say)."""
    rows = max(1, -(-len(images) // columns))
    figure = Figure(figsize=(2.6 * columns, 2.9 * rows))
    for position in range(rows * columns):
        axes = figure.add_subplot(rows, columns, position + 1)
        axes.axis("off")
        if position < len(images):
            axes.imshow(images[position])
            axes.set_title(captions[position], fontsize=8)
    figure.tight_layout()
    return figure
