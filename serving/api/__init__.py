"""The HTTP API: dependencies (``deps``), error handlers (``errors``), routers (``routes/``) and
their assembly (``main``)."""
