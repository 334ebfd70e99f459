"""For the tests that drive the dashboard in Chromium: wait for a condition in the page by polling a
JavaScript expression with a deadline (the dashboard's Content-Security-Policy forbids the `eval`
that Playwright's `wait_for_function` uses)."""

from __future__ import annotations

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page

from tests.support.polling import until_sync


def wait_until(page: Page, expression: str, timeout: float = 30.0) -> None:
    """Poll a JavaScript expression in the page until it is true (the pages' Content-Security-Policy
    forbids the `eval` that `wait_for_function` needs)."""

    def holds() -> bool:
        try:
            return bool(page.evaluate(expression))
        except PlaywrightError as exc:  # the page is navigating (the login reloads it): not yet
            if "context was destroyed" in exc.message or "navigat" in exc.message:
                return False
            raise

    until_sync(holds, timeout=timeout, interval=0.1, message=expression)
