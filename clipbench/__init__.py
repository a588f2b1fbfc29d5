"""clipbench: a research workbench for CLIP-family models.

``clipbench.CLIPModelManager`` is the single-model API; ``clipbench eval`` is the command
line. Heavy modules (torch, OpenCLIP) load on first use of an attribute.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["CLIPModelManager", "run_evaluation", "__version__"]

if TYPE_CHECKING:
    from clipbench.evaluation import run_evaluation
    from clipbench.manager import CLIPModelManager


def __getattr__(name: str) -> Any:
    if name == "CLIPModelManager":
        from clipbench.manager import CLIPModelManager

        return CLIPModelManager
    if name == "run_evaluation":
        from clipbench.evaluation import run_evaluation

        return run_evaluation
    raise AttributeError(f"module 'clipbench' has no attribute {name!r}")
