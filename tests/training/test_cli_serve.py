"""`churn serve` and `churn score` settings: CHURN_* variables and the --config file apply where no
option overrides them, bad settings are named without a traceback, and the server refuses to open
/v1/* to the network without API keys, before it binds or loads anything (so these tests never
start a server)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CHURN = [sys.executable, "-m", "cli.main"]


def churn(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """Run the CLI with ``env`` as its only CHURN_* variables."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("CHURN_")}
    # A timeout, not a hang, if `churn serve` ever started serving instead of refusing.
    return subprocess.run([*CHURN, *args], env={**base, **env}, cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("args", "env"), [
    ([], {"CHURN_HOST": "0.0.0.0"}),  # from the environment
    (["--host", "10.1.2.3"], {"CHURN_HOST": "127.0.0.1"}),  # the option wins over it
], ids=["env", "option"])
def test_serve_without_keys_off_loopback_is_refused(args, env, tmp_path):
    result = churn(["serve", *args], env, tmp_path)
    assert result.returncode == 2, result.stderr
    message = " ".join(result.stderr.split())  # whatever the console wrapped
    assert "no API keys are configured" in message, result.stderr
    assert "CHURN_API_KEY_HASHES" in message and "CHURN_ALLOW_ANONYMOUS=true" in message
    assert "Traceback" not in result.stderr


def test_serve_reads_churn_variables_that_no_option_overrides(tmp_path):
    # It used to pass its option defaults (workers=1, port 8000) as arguments, which beat
    # CHURN_WORKERS and CHURN_PORT; an invalid value shows the variable is read.
    result = churn(["serve"], {"CHURN_WORKERS": "0"}, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "workers" in result.stderr and "greater than or equal to 1" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_reads_its_config_file_and_names_what_is_wrong_in_it(tmp_path):
    good, bad = tmp_path / "serving.yaml", tmp_path / "bad.yaml"
    good.write_text("host: 0.0.0.0\n")  # read, so refused: no keys off loopback
    bad.write_text("health_wieghts: {usage: 1}\n")
    result = churn(["serve", "--config", str(good)], {}, tmp_path)
    assert result.returncode == 2 and "host '0.0.0.0'" in result.stderr, result.stderr
    result = churn(["serve", "--config", str(bad)], {}, tmp_path)
    assert result.returncode == 2, result.stderr
    message = " ".join(result.stderr.split())
    assert "bad.yaml" in message and "health_wieghts" in message
    assert "Traceback" not in result.stderr


def test_score_names_a_bad_setting_without_a_traceback(tmp_path):
    result = churn(["score", "--data", str(tmp_path), "--config", str(tmp_path / "missing.yaml")],
                   {}, tmp_path)
    assert result.returncode == 2, result.stderr
    assert "churn score: invalid settings" in result.stderr and "missing.yaml" in result.stderr
    assert "Traceback" not in result.stderr
