"""Prompt template sets: named sets, lists, files, and their errors."""

from __future__ import annotations

import pytest

from clipbench.errors import ConfigError
from clipbench.prompts import load_prompt_set, normalize_template


def test_named_sets_sizes():
    assert len(load_prompt_set("openai").templates) == 80
    assert len(load_prompt_set("simple").templates) == 7


def test_both_placeholders_accepted():
    prompt_set = load_prompt_set("custom", templates=["a photo of a {c}.", "art of a {}."])
    assert prompt_set.format("cat") == ["a photo of a cat.", "art of a cat."]


def test_template_file_used(tmp_path):
    path = tmp_path / "templates.txt"
    path.write_text("# my templates\na photo of a {}.\n\nan origami {c}.\n")
    prompt_set = load_prompt_set("custom", path=path)
    assert prompt_set.templates == ("a photo of a {}.", "an origami {}.")


def test_list_and_file_conflict(tmp_path):
    path = tmp_path / "templates.txt"
    path.write_text("a photo of a {}.\n")
    with pytest.raises(ConfigError, match="not both"):
        load_prompt_set("custom", templates=["a {}."], path=path)


def test_missing_template_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_prompt_set("custom", path=tmp_path / "absent.txt")


def test_custom_without_templates_rejected():
    with pytest.raises(ConfigError, match="prompts.templates"):
        load_prompt_set("custom", templates=[])


@pytest.mark.parametrize("template", ["a photo", "a {} and a {}", "a {0}", "a {c} {x}"])
def test_invalid_template_rejected(template):
    with pytest.raises(ConfigError, match="exactly once"):
        normalize_template(template)


def test_custom_file_through_config(compose_config, tmp_path):
    from clipbench.config import validate_config
    from clipbench.evaluation import prompt_set

    path = tmp_path / "templates.txt"
    path.write_text("a photo of a {}.\na sketch of a {}.\n")
    cfg = validate_config(compose_config(["prompts=custom", f"prompts.file={path}"]))
    assert len(prompt_set(cfg).templates) == 2
