"""The web console: static files from the package, served at `/` (the page) and under
`/console/` (its scripts and styles), with a strict Content-Security-Policy. No build step
and nothing from the internet: plain HTML, CSS and JavaScript modules. The API stays where
it is; the console is one more client of it."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import FastAPI
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles

ASSETS_PATH = "/console"

# Scripts, styles and requests from this origin only; images also as `blob:` (the
# thumbnails of the images a person drops, never uploaded for them).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def console_files() -> Path:
    return Path(str(resources.files("app") / "console"))


class _ConsoleFiles(StaticFiles):
    """Its assets: revalidated at most every five minutes (ETag and Last-Modified let a
    browser keep them), with the console's security headers."""

    def file_response(self, *args: object, **kwargs: object) -> Response:
        response = super().file_response(*args, **kwargs)  # type: ignore[arg-type]
        response.headers.update(_HEADERS)
        response.headers["Cache-Control"] = "public, max-age=300"
        return response


def install_console(app: FastAPI) -> None:
    folder = console_files()
    app.mount(ASSETS_PATH, _ConsoleFiles(directory=str(folder)), name="console")

    @app.get("/", include_in_schema=False)
    async def console() -> Response:
        # Always revalidated: a new release's page names its assets at once.
        headers = {**_HEADERS, "Cache-Control": "no-cache"}
        return FileResponse(folder / "index.html", headers=headers)
