"""Helpers to drive the dashboard in a real browser, for tests and benchmarks.

Quick start::

    from dashboard.testing import Browser, served

    with served("flightrec.duckdb", log=Path("dashboard.log")) as url, Browser() as browser:
        loaded = browser.load(f"{url}/sessions")        # waits until the page's script run is done
        assert not loaded.errors
"""

from ._browser import WINDOW, Browser, Loaded, chromium, free_port, http_get, served

__all__ = ["WINDOW", "Browser", "Loaded", "chromium", "free_port", "http_get", "served"]
