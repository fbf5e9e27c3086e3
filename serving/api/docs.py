"""``/docs``: Swagger UI from the assets the ``swagger-ui-bundle-v2`` package ships, not a CDN,
so the API documents itself offline (FastAPI's "self-hosting JavaScript and CSS for docs")."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

#: Where the Swagger UI files are served.
ASSETS = "/docs/assets"


def add_docs(app: FastAPI) -> None:
    """Serve Swagger UI at ``/docs`` with its JavaScript, CSS and icon from :data:`ASSETS`."""
    app.mount(ASSETS, StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} - API docs",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png")
