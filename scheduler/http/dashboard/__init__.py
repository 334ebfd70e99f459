"""The dashboard's files: the page at `/` (`static/index.html`, `dashboard.js`, `dashboard.css`), the
login form `/` shows while a token is wanted (`static/login.html`, `login.js`), and uPlot, vendored
from npm with its licence (`static/vendor/uplot/`). Plain files: no build step; the daemon serves
them under `/dashboard/`."""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"
INDEX_PAGE = (STATIC_DIR / "index.html").read_bytes()
LOGIN_PAGE = (STATIC_DIR / "login.html").read_bytes()
