"""Where the collector's next factor of throughput can come from: the bench's payload decoded,
ingested and written in one process three ways, each timed end to end (issue 15; RESULTS §64).

    python benchmarks/bench_ingest_split.py [--sessions 150] [--senders 4] [--rounds 3]

- ``thread``: one thread decodes, ingests (``Ingestor.build``) and writes (``Store.write``) each
  group in turn, as the collector's writer does with its requests' slices;
- ``committer``: a second thread writes group N while the first decodes and ingests group N+1;
- ``process``: a child process decodes and ingests (one ``Ingestor``, so what it remembers stays
  whole), and hands each group's batch to this process, which writes it.

A group is one request of each sender (``bench_collector.py --stages``'s grouping). Every mode gets a
fresh store; the modes run in turn, ``--rounds`` times, so that a shared machine's load falls on all.
Printed: spans per second, each round, and the medians.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import pickle
import queue
import statistics
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _workload import machine_header  # noqa: E402
from bench_collector import _prepare  # noqa: E402

PROTOBUF = "application/x-protobuf"


def _ingest_child(conn: Connection) -> None:
    """Decodes and ingests each group it is sent, and sends back its batch; ``b""`` ends it."""
    from tracer._collector import tune_gc
    from tracer._ingest import Batch, Ingestor
    from tracer._otlp import decode_request

    tune_gc()
    ingestor = Ingestor()
    while (message := conn.recv_bytes()) != b"":
        records = [r for body in pickle.loads(message) for r in decode_request(body, PROTOBUF)[0]]
        conn.send_bytes(pickle.dumps((len(records), ingestor.build(records, Batch())), protocol=5))
    conn.send_bytes(b"")


def _run(mode: str, groups: list[list[bytes]], db: str) -> tuple[int, float]:
    """The spans of ``groups`` and the spans per second ``mode`` stored them at, into a new store at ``db``."""
    from tracer._ingest import Batch, Ingestor
    from tracer._otlp import decode_request
    from tracer._store import Store

    store = Store(db)
    store.defer_checkpoints("256MB")  # as the collector
    store._tables(Batch())  # reads the column types once: not a span's cost
    spans = 0
    if mode == "process":
        parent, child_end = mp.get_context("spawn").Pipe()
        child = mp.get_context("spawn").Process(target=_ingest_child, args=(child_end,))
        child.start()
        parent.send_bytes(pickle.dumps([]))  # the child's imports, before the clock starts
        parent.recv_bytes()
        began = time.perf_counter()
        def feed() -> None:
            for group in groups:
                parent.send_bytes(pickle.dumps(group))
            parent.send_bytes(b"")

        feeder = threading.Thread(target=feed)
        feeder.start()
        while True:
            message = parent.recv_bytes()
            if message == b"":
                break
            count, batch = pickle.loads(message)
            store.write(batch)
            spans += count
        feeder.join()
        child.join()
    else:
        ingestor = Ingestor()
        batches: queue.Queue = queue.Queue(maxsize=1)

        def commit() -> None:
            for batch in iter(batches.get, None):
                store.write(batch)

        committer = threading.Thread(target=commit)
        write = batches.put if mode == "committer" else store.write
        began = time.perf_counter()
        if mode == "committer":
            committer.start()
        for group in groups:
            records = [r for body in group for r in decode_request(body, PROTOBUF)[0]]
            write(ingestor.build(records, Batch()))
            spans += len(records)
        if mode == "committer":
            batches.put(None)
            committer.join()
    seconds = time.perf_counter() - began
    store.close()
    return spans, spans / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--sessions", type=int, default=150, help="sessions a sender records")
    parser.add_argument("--turns", type=int, default=8)
    parser.add_argument("--batch", type=int, default=512, help="spans a request")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from tracer._collector import tune_gc

    with tempfile.TemporaryDirectory() as tmp:
        sent = [_prepare(k, args.sessions, args.turns, args.batch, tmp) for k in range(args.senders)]
        groups = [[s[i] for s in sent if i < len(s)] for i in range(max(map(len, sent)))]
        tune_gc()  # as `flightrec serve` does
        rates: dict[str, list[int]] = {"thread": [], "committer": [], "process": []}
        for r in range(args.rounds):
            for mode in rates:
                spans, rate = _run(mode, groups, str(Path(tmp) / f"{mode}{r}.duckdb"))
                rates[mode].append(round(rate))
    print(machine_header("ingest split"))
    print(json.dumps({"spans": spans, "groups": len(groups),
                      "spans_per_s": rates,
                      "median_spans_per_s": {m: round(statistics.median(v)) for m, v in rates.items()}}, indent=2))


if __name__ == "__main__":
    main()
