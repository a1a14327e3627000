"""Starting the Streamlit server in this process, on one store."""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path
from typing import Any

import tracer

from . import _source
from ._source import COLLECTOR_ENV, DB_ENV, MODE_ENV, Mode

APP = str(Path(__file__).with_name("app.py"))


def exposure_warning(host: str, port: int) -> str:
    """What ``run`` prints when the dashboard is bound beyond loopback. Streamlit has no login and no
    hook to check a token on its HTTP and WebSocket endpoints, so the dashboard cannot require one as
    the collector does; a login belongs in front of it (README, "Exposing the dashboard")."""
    return (f"WARNING: the dashboard on {host}:{port} is reachable from other machines, and it has no login: anyone "
            "who reaches it can read every recorded conversation, acknowledge and resolve alerts, approve or reject "
            "held refunds and e-mails, and run replays and forks (which call the model), and the audit log cannot "
            "tell who. Bind it to 127.0.0.1 and reach it "
            f"through an SSH tunnel (ssh -L {port}:127.0.0.1:{port} HOST), or put a reverse proxy with a login and "
            "TLS in front of it.")


def run(db: str | os.PathLike[str] | None = None, *, host: str = "127.0.0.1", port: int = 8501,
        mode: Mode = "read_only", collector: str | None = None) -> None:
    """Serves the dashboard on ``http://HOST:PORT`` until interrupted.

    Args:
        db: The store to show (default ``$FLIGHTREC_DB`` or ``./flightrec.duckdb``).
        host: The interface to bind; loopback by default.
        port: The port.
        mode: ``read_only`` to open the file read-only (``flightrec dashboard``), ``shared`` when
            this process already writes it (``flightrec serve``).
        collector: In ``shared`` mode, the collector's URL: agents run from a page send their spans to it.

    Raises:
        tracer.StoreError: the file does not exist, or (read-only) another process writes it.

    Blocking: runs Streamlit's event loop on this thread, which must be the main thread.
    """
    from tracer.collector import is_loopback

    path = tracer.default_db_path(db)
    os.environ[DB_ENV] = path
    os.environ[MODE_ENV] = mode
    if collector:
        os.environ[COLLECTOR_ENV] = collector
    if mode == "read_only":
        # Fails here, in the terminal, rather than in the browser; and kept open for the first visitor,
        # who would otherwise wait for it (0.2 s on the 1M-span store, benchmarks/RESULTS.md).
        _source.current().store()
    print(f"flightrec dashboard on http://{host}:{port}, {'reading' if mode == 'read_only' else 'sharing'} {path} "
          "(Ctrl-C to stop)", flush=True)
    if not is_loopback(host):
        print(exposure_warning(host, port), file=sys.stderr, flush=True)
    # Imported here: Streamlit takes a second to import, and no other command needs it. The pages
    # import the others; loading them now spares the first visitor a second or two (pandas, which
    # the pages' helpers import and Streamlit does not, is 0.7 s of it).
    import altair  # noqa: F401
    import pandas  # noqa: F401
    from streamlit.web import bootstrap

    import replay  # noqa: F401
    from evals import compare_stored  # noqa: F401  (evals loads its harness on first use)

    from . import _ui  # noqa: F401

    # Streamlit collects every generation after each script run (runner.postScriptGC), holding the
    # GIL just as the run's last messages are to be sent: over these modules' ~270,000 objects that
    # was ~0.18 s of CPU on every page load. What is alive now lives as long as the process, so the
    # collector need not walk it again (benchmarks/RESULTS.md).
    gc.collect()
    gc.freeze()

    bootstrap.load_config_options({
        "server_port": port,
        "server_address": host,
        "server_headless": True,
        "server_fileWatcherType": "none",
        "server_runOnSave": False,
        "browser_gatherUsageStats": False,
        "global_developmentMode": False,
        "client_toolbarMode": "viewer",
    })
    _connect_at_once()
    try:
        bootstrap.run(APP, False, [], {})
    finally:
        if mode == "read_only":
            _source.current().close()


def _connect_at_once() -> None:
    """Tells Streamlit's front end where its server is, so that a page opened at its own URL connects at once.

    Opened at ``/sessions``, the front end cannot tell a page's path from the path the app is served
    under: it asks ``/sessions/_stcore/health`` first, gets a 404, waits out its retry delay, and only
    then asks ``/_stcore/health``. That was 0.09 s of every page's load but Overview's, a fifth of a warm
    one (benchmarks/RESULTS.md §84). The page Streamlit serves now sets what Streamlit's own hosts set
    in it, ``window.__streamlit.BACKEND_BASE_URL``: its URL without the page's name, so that a proxy's
    prefix is kept. Left as it is on a Streamlit whose server this does not know: it is only slower."""
    try:
        from starlette.responses import FileResponse, HTMLResponse
        from streamlit.web.server.starlette import starlette_static_routes as routes
    except ImportError:
        return
    make = getattr(routes, "create_streamlit_static_handler", None)
    if make is None:
        return
    from ._ui import PAGES

    page_name = r"\/(" + "|".join(PAGES) + ")$"
    script = ("<script>window.__streamlit = {BACKEND_BASE_URL: window.location.origin + "
              f"window.location.pathname.replace(/\\/+$/, '').replace(/{page_name}/, '')}}</script>")

    def create(directory: str, base_url: str | None) -> Any:
        handler = make(directory, base_url)
        page = Path(directory, "index.html").read_text(encoding="utf-8").replace("<head>", "<head>" + script, 1)
        served = handler.get_response

        async def get_response(path: str, scope: Any) -> Any:
            response = await served(path, scope)
            if (scope["method"] == "GET" and isinstance(response, FileResponse)
                    and Path(response.path).name == "index.html"):
                return HTMLResponse(page, headers={"Cache-Control": "no-cache"})
            return response

        handler.get_response = get_response
        return handler

    routes.create_streamlit_static_handler = create
