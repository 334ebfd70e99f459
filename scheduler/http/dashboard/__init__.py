"""The dashboard's files: the page at `/` (`static/index.html`, `dashboard.js`, `dashboard.css`), the
login form `/` shows while a token is wanted (`static/login.html`, `login.js`), and uPlot, vendored
from npm with its licence (`static/vendor/uplot/`). Plain files: no build step; the daemon serves
them under `/dashboard/`."""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"
INDEX_PAGE = (STATIC_DIR / "index.html").read_bytes()
LOGIN_PAGE = (STATIC_DIR / "login.html").read_bytes()
# The dashboard's pages load only the daemon's own files: no inline script, nothing from another host.
PAGE_POLICY = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {"Cache-Control": "no-cache", "Content-Security-Policy": PAGE_POLICY}
HTML = "text/html; charset=utf-8"
