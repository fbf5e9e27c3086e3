"""The ``churn`` command: the composition root above ``features``, ``training`` and ``serving``.

Each command parses its options, calls one function of a package and prints the outcome; nothing
imports this package.
"""

from __future__ import annotations

import typer

from cli.data import check, features, generate
from cli.demo import demo
from cli.serve import score, serve
from cli.train import evaluate, promote, train

app = typer.Typer(help="churn-risk: churn prediction and health scores for customer success.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
for command in (generate, check, features, train, evaluate, promote, serve, score, demo):
    app.command()(command)


if __name__ == "__main__":  # `python -m cli.main`, used by the tests
    app()
