"""Prompt templates for zero-shot classifiers.

Named sets come from OpenCLIP: ``openai`` (the 80 templates of the CLIP paper) and
``simple`` (OpenCLIP's 7-template subset). A custom set is a list of strings or a text
file with one template per line. Templates use ``{}`` or ``{c}`` as the class-name slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from open_clip import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

from clipbench.errors import ConfigError

_PROBE = "\x00classname\x00"
NAMED_TEMPLATE_SETS = {
    "openai": tuple(t(_PROBE).replace(_PROBE, "{}") for t in OPENAI_IMAGENET_TEMPLATES),
    "simple": tuple(t(_PROBE).replace(_PROBE, "{}") for t in SIMPLE_IMAGENET_TEMPLATES),
}


@dataclass(frozen=True)
class PromptSet:
    """A named list of templates, each with exactly one ``{}`` slot."""

    name: str
    templates: tuple[str, ...]

    def format(self, classname: str) -> list[str]:
        return [template.format(classname) for template in self.templates]


def normalize_template(template: str) -> str:
    """Turn a ``{c}`` or ``{}`` template into the ``{}`` form; reject any other braces."""
    normalized = template.replace("{c}", "{}")
    if normalized.count("{}") != 1 or normalized.replace("{}", "").count("{") or normalized.replace("{}", "").count("}"):
        raise ConfigError(
            f"prompt template {template!r} must contain the class-name slot {{}} or {{c}} exactly once "
            "and no other braces"
        )
    return normalized


def load_prompt_set(name: str, templates: Sequence[str] | None = None, path: str | Path | None = None) -> PromptSet:
    """Build a prompt set from an explicit list, a file, or a named set (only one of these)."""
    if templates and path is not None:
        raise ConfigError("give either prompts.templates or prompts.file, not both")

    if templates:
        return PromptSet(name, tuple(normalize_template(t) for t in templates))

    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise ConfigError(f"prompt template file not found: {path}")
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        lines = [line for line in lines if line and not line.startswith("#")]
        if not lines:
            raise ConfigError(f"prompt template file {path} contains no templates (one per line, '#' starts a comment)")
        return PromptSet(name, tuple(normalize_template(t) for t in lines))

    if name in NAMED_TEMPLATE_SETS:
        return PromptSet(name, NAMED_TEMPLATE_SETS[name])
    raise ConfigError(
        f"prompt set {name!r} has no templates: use one of {sorted(NAMED_TEMPLATE_SETS)}, "
        "or give prompts.templates=[...] or prompts.file=PATH"
    )
