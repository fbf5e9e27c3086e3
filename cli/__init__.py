"""The ``churn`` command line (``cli.main:app``)."""
