"""Audit log benchmark: what recording who did it adds to an alert status change, what one
``Store.audit`` entry costs, and reading the log when it is long. Process CPU time (user+sys).

    python benchmarks/bench_audit.py [--alerts 1000] [--changes 2000] [--entries 100000] [--json]

Imports the ``tracer`` on ``sys.path`` first, so the same script times a checkout without the
audit log (``PYTHONPATH=/tmp/base python benchmarks/bench_audit.py`` with a ``git archive`` of
the base commit in ``/tmp/base``): run both ways in turn and compare the medians. Without
``Store.audit`` only the status changes are timed.

- ``set_alert_status``: ``--changes`` changes on a file store of ``--alerts`` alerts, each alert
  acknowledged then reopened (one transaction each, with its audit entry where there is one);
- ``audit``: ``--changes`` entries appended one by one (one transaction each);
- ``audit_entries``: the newest 50 of ``--entries`` entries, and the newest 50 of one action,
  20 reads each.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import tracer


def _alert(n: int) -> tracer.AlertRecord:
    return tracer.AlertRecord(
        alert_id=f"{n:010x}", fingerprint=f"fp{n}", detector="loops.repeat", family="loops", severity="warning",
        title=f"loop {n}", agent="support", route="support/x", session_id=None, turns=[1], session_ids=[],
        evidence={"calls": n}, status="open", first_seen_ns=n, last_seen_ns=n + 1, count=1)


def _cpu_us(fn, n: int) -> float:
    """CPU µs per call of ``fn`` over ``n`` calls."""
    start = time.process_time()
    for i in range(n):
        fn(i)
    return (time.process_time() - start) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=2000)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--json", action="store_true", help="One JSON line instead of text.")
    args = parser.parse_args()
    audited = hasattr(tracer.Store, "audit")
    out: dict[str, object] = {"audited": audited}
    with tempfile.TemporaryDirectory() as tmp:
        with tracer.Store(str(Path(tmp) / "bench.duckdb")) as store:
            store.record_alerts([(_alert(n), "k") for n in range(args.alerts)])
            ids = [f"{n:010x}" for n in range(args.alerts)]
            statuses = ("acknowledged", "open")
            out["set_alert_status_us"] = _cpu_us(
                lambda i: store.set_alert_status(ids[(i // 2) % len(ids)], statuses[i % 2]), args.changes)
            if audited:
                out["audit_us"] = _cpu_us(
                    lambda i: store.audit("bench", "replay", f"session-{i}", {"turn": 3, "new_session": "s"},
                                          via="cli"), args.changes)
                with store._lock:  # the bulk of a long log, inserted at once (not what is timed)
                    store._con.execute(
                        "INSERT INTO audit_log SELECT i, 'bench', CASE WHEN i % 10 = 0 THEN 'fork' ELSE 'replay' END, "
                        "'session-' || i, 'cli', '{}' FROM range(?) t(i)", [args.entries])
                out["audit_entries_us"] = _cpu_us(lambda i: store.audit_entries(limit=50), 20)
                out["audit_entries_action_us"] = _cpu_us(lambda i: store.audit_entries(limit=50, action="fork"), 20)
    if args.json:
        print(json.dumps(out))
    else:
        for key, value in out.items():
            print(f"{key:<26}{value:,.0f}" if isinstance(value, float) else f"{key:<26}{value}")


if __name__ == "__main__":
    main()
