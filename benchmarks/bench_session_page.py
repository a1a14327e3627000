"""The Session page's script CPU in AppTest: its first run (queries uncached) and a rerun.

    python benchmarks/bench_session_page.py DB SESSION_ID [--view decision|chat|trace|context]

The Overview runs first, so that imports and the store's first open are out of the timing; then
the Session page of SESSION_ID with ``view``, twice. Prints one JSON line with the process CPU
time (user + sys) of each run. One view per process: to compare trees, run it alternately with
``PYTHONPATH`` set to each.
"""

from __future__ import annotations

import argparse
import json
import os


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("db")
    parser.add_argument("session_id")
    parser.add_argument("--view", default="decision")
    args = parser.parse_args()
    from dashboard._source import DB_ENV, MODE_ENV

    os.environ[DB_ENV], os.environ[MODE_ENV] = args.db, "read_only"
    from streamlit.testing.v1 import AppTest

    from dashboard import APP

    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("views/session.py")
    at.query_params["id"], at.query_params["view"] = args.session_id, args.view
    t = _cpu()
    at.run()
    first = _cpu() - t
    t = _cpu()
    at.run()
    again = _cpu() - t
    if at.exception:
        raise SystemExit(f"the page failed: {[e.value for e in at.exception]}")
    print(json.dumps({"view": args.view, "first_s": round(first, 3), "rerun_s": round(again, 3)}))


if __name__ == "__main__":
    main()
