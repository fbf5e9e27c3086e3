"""`churn serve`: CHURN_* settings apply where no option overrides them, and the server refuses
to open /v1/* to the network without API keys, with a clear error and before it binds or loads
anything (so these tests never start a server)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CHURN = [sys.executable, "-m", "training.cli"]


def churn_serve(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CHURN_")}
    # A timeout, not a hang, if the command ever started serving instead of refusing.
    return subprocess.run([*CHURN, "serve", *args], env={**base, **env}, cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("args", "env"), [
    ([], {"CHURN_HOST": "0.0.0.0"}),  # from the environment
    (["--host", "10.1.2.3"], {"CHURN_HOST": "127.0.0.1"}),  # the option wins over it
], ids=["env", "option"])
def test_serve_without_keys_off_loopback_is_refused(args, env, tmp_path):
    result = churn_serve(args, env, tmp_path)
    assert result.returncode == 2, result.stderr
    message = " ".join(result.stderr.split())  # whatever the console wrapped
    assert "no API keys are configured" in message, result.stderr
    assert "CHURN_API_KEY_HASHES" in message and "CHURN_ALLOW_ANONYMOUS=true" in message
    assert "Traceback" not in result.stderr


def test_serve_reads_churn_variables_that_no_option_overrides(tmp_path):
    # It used to pass its option defaults (workers=1, port 8000) as arguments, which beat
    # CHURN_WORKERS and CHURN_PORT; an invalid value shows the variable is read.
    result = churn_serve([], {"CHURN_WORKERS": "0"}, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "workers" in result.stderr and "greater than or equal to 1" in result.stderr
    assert "Traceback" not in result.stderr
