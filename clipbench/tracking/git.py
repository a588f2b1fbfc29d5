"""Read the checked-out git commit, so that a logged run names the code it came from."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

from clipbench.tracking.store import repository_root

logger = logging.getLogger(__name__)

GIT_TIMEOUT_S = 10.0


def git_commit(repo_root: Path | None = None) -> str | None:
    """Return the checked-out commit sha, with ``-dirty`` if tracked files have changes.

    Returns None outside a git checkout, in a repository without commits, or when git is
    not installed. ``repo_root`` defaults to ``repository_root()``.
    """
    folder = repository_root() if repo_root is None else Path(repo_root)

    sha = _run_git(folder, "rev-parse", "--verify", "HEAD")
    if sha is None:
        return None

    changes = _run_git(folder, "status", "--porcelain", "--untracked-files=no")
    if changes:
        return f"{sha}-dirty"
    return sha


def _run_git(folder: Path, *arguments: str) -> str | None:
    """Return git's stripped standard output, or None if git fails or is missing."""
    try:
        completed = subprocess.run(
            ["git", "-C", str(folder), *arguments],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        logger.debug("git %s in %s failed: %s", " ".join(arguments), folder, error)
        return None

    if completed.returncode != 0:
        return None
    return completed.stdout.strip()
