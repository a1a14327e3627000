"""The collector's public surface: what a process that is a store's single writer runs (``flightrec
serve``): the OTLP/HTTP collector, its OTLP/gRPC receiver, the read API other processes query the
store through, and the process-wide settings the command that owns the process applies.

Kept apart from ``tracer``, which every instrumented agent imports: these bring in uvicorn, h11
and grpc, which an agent that exports its spans has no use for.

Quick start::

    from tracer.collector import Collector, ReadApi

    collector = Collector("flightrec.duckdb", port=4318)
    read_api = ReadApi("flightrec.duckdb", collector_url=collector.url, maintain=collector.maintain).start()
    try:
        collector.serve_forever()      # until Ctrl-C
    finally:
        read_api.close()
        collector.close()
"""

from ._collector import MAX_RESIDENT_BYTES, Collector, is_loopback, skip_pandas, tune_gc, wait_until_serving
from ._grpc import GrpcReceiver
from ._read_api import ReadApi

__all__ = [
    "MAX_RESIDENT_BYTES",
    "Collector",
    "GrpcReceiver",
    "ReadApi",
    "is_loopback",
    "skip_pandas",
    "tune_gc",
    "wait_until_serving",
]
