"""JupyterLab widget front ends for clipbench; they only call the library.

Each widget is a class with its top-level ipywidgets container in ``.widget`` and plain
methods (``load``, ``classify``, ``compute``, ``run``) that its buttons call, so tests
can drive it without a browser. The core library never imports this package.

    session = ModelSession()
    display(ModelSwitcher(session).widget, ClassifierExplorer(session).widget)
"""

from clipbench.widgets.classifier_explorer import ClassifierExplorer
from clipbench.widgets.common import InputError
from clipbench.widgets.evaluation_runner import EvaluationRunner
from clipbench.widgets.image_picker import ImagePicker
from clipbench.widgets.model_session import DEFAULT_MODEL_CONFIG, ModelSession
from clipbench.widgets.model_switcher import ModelSwitcher
from clipbench.widgets.similarity_explorer import SimilarityExplorer

__all__ = [
    "DEFAULT_MODEL_CONFIG",
    "ClassifierExplorer",
    "EvaluationRunner",
    "ImagePicker",
    "InputError",
    "ModelSession",
    "ModelSwitcher",
    "SimilarityExplorer",
]
