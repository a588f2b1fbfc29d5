"""``ModelSession``: the model that the notebook's widgets share, and who to tell when it changes."""

from __future__ import annotations

import logging
from typing import Callable

from clipbench.config import compose_eval_config
from clipbench.errors import ModelLoadError
from clipbench.manager import CLIPModelManager

log = logging.getLogger(__name__)

DEFAULT_MODEL_CONFIG = "clipbench_tiny"

ManagerObserver = Callable[[CLIPModelManager], None]


class ModelSession:
    """Holds the current ``CLIPModelManager``; a failed load keeps the previous one.

    ``manager`` loads the offline model (``clipbench_tiny``) on first access when nothing
    is loaded yet. ``device``, ``precision`` and ``templates`` apply to every model that
    ``load`` builds. ``config_name`` and ``checkpoint_path`` describe the current model,
    and both are None for a manager passed in.
    """

    def __init__(self, manager: CLIPModelManager | None = None, *, device: str = "auto", precision: str = "fp32",
                 templates: str = "simple", max_image_pixels: int | None = None) -> None:
        self._manager = manager
        self.device = device
        self.precision = precision
        self.templates = templates
        self.max_image_pixels = max_image_pixels
        self.config_name: str | None = None
        self.checkpoint_path: str | None = None
        self._observers: list[ManagerObserver] = []

    @property
    def manager(self) -> CLIPModelManager:
        """The current manager, loading the offline model first when none is loaded."""
        if self._manager is None:
            self.load()
        return self._manager

    @property
    def is_loaded(self) -> bool:
        return self._manager is not None

    def add_observer(self, callback: ManagerObserver) -> None:
        """Call ``callback(manager)`` after every successful load."""
        self._observers.append(callback)

    def remove_observer(self, callback: ManagerObserver) -> None:
        self._observers.remove(callback)

    def load(self, model_config: str | None = DEFAULT_MODEL_CONFIG, checkpoint_path: str | None = None) -> CLIPModelManager:
        """Build and initialize a manager from ``conf/model/<model_config>.yaml``, then make it current.

        ``checkpoint_path`` replaces the config's ``checkpoint``; None or blank keeps it, and
        ``model_config=None`` means the offline model. Raises ConfigError for an unknown
        config and ModelLoadError when the model cannot be loaded; either way the previous
        manager stays current.
        """
        config_name = model_config or DEFAULT_MODEL_CONFIG
        checkpoint = checkpoint_path.strip() if checkpoint_path and checkpoint_path.strip() else None
        model_cfg = compose_eval_config([f"model={config_name}"]).model

        manager = CLIPModelManager(
            model_cfg.name, model_cfg.pretrained, checkpoint or model_cfg.checkpoint,
            device=self.device, precision=self.precision, templates=self.templates,
            max_image_pixels=self.max_image_pixels, quick_gelu=model_cfg.quick_gelu, hub_cache_dir=model_cfg.cache_dir,
        )
        try:
            manager.initialize()
        except RuntimeError as err:
            # initialize() wraps every clipbench error in RuntimeError; torch's own failures
            # (out of memory while moving the model, say) are RuntimeErrors too.
            raise ModelLoadError(str(err)) from err

        self._manager = manager
        self.config_name = config_name
        self.checkpoint_path = checkpoint
        log.info("Loaded model config %s (%s) on %s in %.2f s", config_name, manager.model_name, manager.device,
                 manager.load_time or 0.0)
        self._notify(manager)
        return manager

    def _notify(self, manager: CLIPModelManager) -> None:
        for callback in list(self._observers):
            try:
                callback(manager)
            except Exception:  # one broken observer must not undo a load or starve the others
                log.exception("Model session observer %r failed", callback)
