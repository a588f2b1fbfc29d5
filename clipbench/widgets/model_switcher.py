"""``ModelSwitcher``: pick a shipped model config, optionally a local checkpoint, and load it."""

from __future__ import annotations

import html

import ipywidgets as widgets

from clipbench.errors import ClipbenchError
from clipbench.manager import CLIPModelManager
from clipbench.widgets.common import config_group_names, error_html, first_line, run_from_button, status_html
from clipbench.widgets.model_session import DEFAULT_MODEL_CONFIG, ModelSession


class ModelSwitcher:
    """Dropdown of ``conf/model`` configs, checkpoint path, Load button and a status line."""

    def __init__(self, session: ModelSession | None = None) -> None:
        self.session = session if session is not None else ModelSession()

        self.model = widgets.Dropdown(options=config_group_names("model"),
                                      value=self.session.config_name or DEFAULT_MODEL_CONFIG, description="Model")
        self.checkpoint = widgets.Text(placeholder="optional: local .safetensors, .pt, .pth or .bin file",
                                       description="Checkpoint")
        self.load_button = widgets.Button(description="Load", button_style="primary", icon="download")
        self.status = widgets.HTML()

        self.load_button.on_click(lambda button: run_from_button(self.load, self.status, "Loading the model"))
        self.session.add_observer(self._on_model_changed)
        self.status.value = self._describe_current()

        self.widget = widgets.VBox([widgets.HBox([self.model, self.checkpoint, self.load_button]), self.status])

    def load(self) -> CLIPModelManager | None:
        """Load the selected config (and checkpoint); return the manager, or None after showing the error."""
        config_name = self.model.value
        self.status.value = status_html(f"Loading {config_name}…")
        self.load_button.disabled = True
        try:
            return self.session.load(config_name, self.checkpoint.value)
        except ClipbenchError as err:
            self.status.value = (
                error_html(f"Loading {config_name} failed: {first_line(err)}") + "<br>" + self._describe_current(previous=True)
            )
            return None
        finally:
            self.load_button.disabled = False

    def _on_model_changed(self, manager: CLIPModelManager) -> None:
        self.status.value = self._describe_current()

    def _describe_current(self, previous: bool = False) -> str:
        if not self.session.is_loaded:
            if previous:
                return status_html("No model is loaded.")
            return status_html(f"No model loaded yet: {DEFAULT_MODEL_CONFIG} loads on first use, or press Load.")

        info = self.session.manager.get_model_info()
        weights = self.session.checkpoint_path or info["model_path"] or info["pretrained"] or "none"
        parameter_count = info.get("parameter_count")
        rows = [
            ("config", self.session.config_name or "(manager passed in)"),
            ("architecture", info["model_name"]),
            ("weights", weights),
            ("device", info["device"]),
            ("precision", info["precision"]),
            ("parameters", f"{parameter_count / 1e6:.2f} M ({parameter_count:,})" if parameter_count else "unknown"),
            ("load time", f"{info['load_time']:.2f} s" if info["load_time"] is not None else "unknown"),
        ]
        table = "".join(f"<tr><td>{name}</td><td>{html.escape(str(value))}</td></tr>" for name, value in rows)
        heading = "Still using the previous model:" if previous else "Current model:"
        return f"<b>{heading}</b><table>{table}</table>"
