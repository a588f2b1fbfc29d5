"""Helpers for tests that start a local server: a free port and a bounded wait until it responds."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from typing import Callable

import pytest


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen, timeout_s: float, name: str, log_tail: Callable[[], str]) -> None:
    """Poll ``url`` until it returns 200; fail the test with the server log on exit or timeout."""
    deadline = time.monotonic() + timeout_s

    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{name} exited with code {process.returncode} before it answered {url}\n{log_tail()}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:  # URLError, connection refused and timeouts while the server starts
            pass
        time.sleep(0.5)

    pytest.fail(f"{name} start timed out: {url} did not return 200 within {timeout_s} s\n{log_tail()}")
