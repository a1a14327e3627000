"""Fuzzing the collector over loopback: truncated, bit-flipped and mutated protobuf bodies, OTLP/JSON
bodies with fields and attributes of the wrong type, huge numbers, deep nesting, huge attributes,
invalid UTF-8 and bad hex ids, and bad encodings and content types. Every request must get an HTTP
answer (no hang, no dropped connection), no 5xx but a 503 that says the writer is behind, and the
writer must never fail on what a client sent (validation catches it before); the server must still
store a valid request afterwards, and the store must still pass ``replay verify``.

Seeded and bounded in count: a failure names its seed and mutant, and replays the same way.
"""

from __future__ import annotations

import base64
import copy
import gzip
import http.client
import json
import os
import random
from collections.abc import Iterator
from typing import Any

from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

import tracer
from tests.tracer.test_collector import agent_spans
from tracer._collector import Collector

SEED = int(os.environ.get("FLIGHTREC_FUZZ_SEED", "15"))
"""Another seed explores further: ``FLIGHTREC_FUZZ_SEED=7 pytest tests/tracer/test_fuzz.py``."""
BYTE_MUTANTS = 150
JSON_MUTANTS = 48
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_ID_KEYS = ("traceId", "spanId", "parentSpanId")
# A client that sends a wrong hash, or drops the body it hashed, is recorded as it sent: `replay verify`
# is what finds it. These two are left alone, so that verify failing means the store broke something.
_EXACT = ("flightrec.request.sha256", "flightrec.request.body")


def send(url: str, body: bytes, content_type: str | None, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """POSTs on a fresh connection; a hang fails the test at the client's timeout."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("POST", "/v1/traces", body, {**({"Content-Type": content_type} if content_type else {}),
                                                  **headers})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


# -- protobuf: bytes mutated blindly ----------------------------------------------------------------


def byte_mutants(rng: random.Random, good: bytes) -> Iterator[tuple[str, bytes]]:
    """One change each, so that a body mutated in place keeps the spans' ids: such a span is a retry
    of the original, stored once (and a changed id leaves the rest of its span intact)."""
    for k in range(BYTE_MUTANTS):
        data = bytearray(good)
        i = rng.randrange(len(data))
        kind = k % 5
        if kind == 0:
            yield f"truncated at {i}", bytes(data[:i])
        elif kind == 1:
            data[i] ^= 1 << rng.randrange(8)
            yield f"bit flipped at {i}", bytes(data)
        elif kind == 2:
            data[i] = rng.randrange(256)
            yield f"byte {i} set", bytes(data)
        elif kind == 3:
            yield f"{16} random bytes inserted at {i}", bytes(data[:i]) + rng.randbytes(16) + bytes(data[i:])
        else:
            j = min(len(data), i + rng.randrange(1, 64))
            yield f"bytes {i}:{j} repeated", bytes(data[:j]) + bytes(data[i:j]) + bytes(data[j:])


# -- OTLP/JSON: structure mutated knowingly -----------------------------------------------------------


def otlp_json(request: ExportTraceServiceRequest) -> dict[str, Any]:
    """The request as OTLP/JSON writes it (hex ids, where the proto3 JSON mapping has base64)."""
    data = json_format.MessageToDict(request)
    for span in _spans(data):
        for key in _ID_KEYS:
            if key in span:
                span[key] = base64.b64decode(span[key]).hex()
    return data


def _spans(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for rs in data.get("resourceSpans", []) for ss in rs.get("scopeSpans", []) for s in ss.get("spans", [])]


def fresh_ids(data: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A copy whose traces have new ids: stored as new spans, not taken for retries."""
    data = copy.deepcopy(data)
    traces: dict[str, str] = {}
    for span in _spans(data):
        span["traceId"] = traces.setdefault(span["traceId"], rng.randbytes(16).hex())
    return data


_ODD_VALUES: list[Any] = [
    {"intValue": "9223372036854775807"}, {"intValue": "-9223372036854775808"}, {"intValue": "4611686018427387904"},
    {"doubleValue": "NaN"}, {"doubleValue": "Infinity"}, {"doubleValue": "-Infinity"}, {"doubleValue": 1e308},
    {"stringValue": "12"}, {"stringValue": "abc"}, {"stringValue": ""}, {"stringValue": "\u00e9\U0001f600"},
    {"boolValue": True}, {"bytesValue": "//79/A=="}, {}, {"arrayValue": {"values": [{"intValue": "1"}, {}]}},
    {"arrayValue": {}}, {"kvlistValue": {"values": [{"key": "a", "value": {"stringValue": "b"}}]}},
    {"stringValue": "x" * 200_000},
]
"""Attribute values of every kind and edge: what a mistyped gen_ai.* or flightrec.* attribute can be."""


def _deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"stringValue": "bottom"}
    for _ in range(levels):
        value = {"arrayValue": {"values": [value]}}
    return value


def json_mutants(rng: random.Random, base: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any] | bytes]]:
    for k in range(JSON_MUTANTS):
        data = fresh_ids(base, rng)
        spans = _spans(data)
        span = rng.choice(spans)
        kind = k % 8
        if kind in (0, 1, 2):  # an attribute of another type or an edge value
            attrs = [a for a in span.get("attributes", []) if a["key"] not in _EXACT]
            if attrs:
                attr = rng.choice(attrs)
                attr["value"] = copy.deepcopy(rng.choice(_ODD_VALUES))
                yield f"attribute {attr['key']} = {str(attr['value'])[:60]}", data
                continue
        if kind == 3:  # a field of another type, or a number out of range
            field, value = rng.choice([
                ("startTimeUnixNano", str(2**64 - 1)), ("endTimeUnixNano", str(2**63)), ("startTimeUnixNano", "abc"),
                ("endTimeUnixNano", -1), ("startTimeUnixNano", 1e400), ("kind", "SPAN_KIND_NOPE"), ("kind", 2**40),
                ("name", 5), ("name", ["a"]), ("attributes", {"a": 1}), ("status", []), ("status", {"code": 9}),
                ("events", [{"timeUnixNano": str(2**64 - 1), "name": "e"}]), ("links", "x"),
                ("droppedAttributesCount", -1),
            ])
            span[field] = value
            yield f"span field {field} = {str(value)[:40]}", data
        elif kind == 4:  # bad ids
            field = rng.choice(_ID_KEYS)
            value = rng.choice(["zz", "abc", "00" * 16, "0" * 64, "é" * 16, 12, None, ""])
            span[field] = value
            yield f"{field} = {value!r}", data
        elif kind == 5:  # deep nesting: within the limit, just past it, and far past it
            levels = rng.choice([31, 33, 100, 5000])
            if levels < 1000:
                span.setdefault("attributes", []).append({"key": "deep", "value": _deep(levels)})
                yield f"an attribute nested {levels} levels", data
            else:  # deeper than a JSON parser recurses: written out as text
                span.setdefault("attributes", []).append({"key": "deep", "value": "HOLE"})
                text = json.dumps(data).replace('"HOLE"', '{"arrayValue":{"values":[' * levels + "{}" + "]}}" * levels)
                yield f"an attribute nested {levels} levels", text.encode()
        elif kind == 6:  # huge attributes: many, and long
            span.setdefault("attributes", []).extend(
                {"key": f"k{i}", "value": {"stringValue": "v" * 1000}} for i in range(rng.choice([10, 200])))
            yield "many long attributes", data
        elif kind == 7:  # text that is not valid UTF-8, or a lone surrogate
            text = json.dumps(data)
            i = text.index('"name"')
            if rng.random() < 0.5:
                yield "invalid UTF-8", text[:i].encode() + b'"\xff\xfe", ' + text[i:].encode()
            else:
                yield "a lone surrogate", (text[:i] + '"x": "\\ud800", ' + text[i:]).encode()
        else:
            span.setdefault("attributes", []).append(
                {"key": "flightrec.request.body", "value": {"stringValue": "[1, 2"}})
            yield "a request body that is not a JSON object", data


def as_protobuf(data: dict[str, Any]) -> bytes | None:
    """The mutated request as protobuf, when its fields still fit the message."""
    try:
        data = json.loads(json.dumps(data))
        for span in _spans(data):
            for key in _ID_KEYS:
                if isinstance(span.get(key), str):
                    span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
        return json_format.ParseDict(data, ExportTraceServiceRequest(), ignore_unknown_fields=True).SerializeToString()
    except (ValueError, TypeError, json_format.ParseError, RecursionError, OverflowError):
        return None


ENCODINGS: list[tuple[str, bytes | None, str | None, dict[str, str]]] = [
    # (what, body (None: the good one), content type, headers)
    ("no content type", None, None, {}),
    ("text/plain", None, "text/plain", {}),
    ("a charset on protobuf", None, "application/x-protobuf; charset=utf-8", {}),
    ("JSON in capitals", b"{}", "APPLICATION/JSON", {}),
    ("protobuf sent as JSON", None, JSON, {}),
    ("deflate", None, PROTOBUF, {"Content-Encoding": "deflate"}),
    ("gzip twice named", None, PROTOBUF, {"Content-Encoding": "gzip, gzip"}),
    ("gzip of nothing", b"", PROTOBUF, {"Content-Encoding": "gzip"}),
    ("a body not gzip", None, PROTOBUF, {"Content-Encoding": "gzip"}),
    ("an empty body", b"", PROTOBUF, {}),
    ("an empty JSON body", b"", JSON, {}),
    ("JSON null", b"null", JSON, {}),
    ("a JSON list", b"[]", JSON, {}),
    ("a header that is no media type", None, ";;;", {}),
]


def test_every_mutated_request_gets_an_answer_and_the_store_stays_sound(tmp_path, caplog):
    rng = random.Random(SEED)
    request = encode_spans(agent_spans())
    good = request.SerializeToString()
    base = otlp_json(request)
    db = str(tmp_path / "fuzz.duckdb")
    answered: dict[int, int] = {}

    def check(what: str, body: bytes, content_type: str | None, headers: dict[str, str] | None = None) -> None:
        try:
            status, reply_headers, text = send(collector.url, body, content_type, headers or {})
        except (OSError, http.client.HTTPException) as exc:  # socket.timeout is an OSError
            raise AssertionError(f"seed {SEED}, {what}: no answer ({exc!r})") from None
        # A 503 only says that the writer is behind (load), never that these spans failed to store.
        busy = status == 503 and "Retry-After" in reply_headers and b"writer is behind" in text
        assert status < 500 or busy, (what, status, text[:300])
        if status != 200:
            assert text.strip(), f"{what}: a {status} must say what was wrong"
        answered[status] = answered.get(status, 0) + 1

    with Collector(db, port=0, max_body=2_000_000) as collector:
        # The originals first: a mutant that keeps their ids is a retry of them, stored once.
        check("the original", good, PROTOBUF)
        for what, body in byte_mutants(rng, good):
            check(f"protobuf, {what}", body, PROTOBUF)
            if rng.random() < 0.1:
                check(f"gzip of protobuf, {what}", gzip.compress(body), PROTOBUF, {"Content-Encoding": "gzip"})
        for what, data in json_mutants(rng, base):
            body = data if isinstance(data, bytes) else json.dumps(data).encode()
            check(f"OTLP/JSON, {what}", body, JSON)
            if isinstance(data, dict) and (proto := as_protobuf(data)) is not None:
                check(f"protobuf, {what}", proto, PROTOBUF)
        for what, body, content_type, headers in ENCODINGS:
            check(what, good if body is None else body, content_type, headers)
        check("gzip cut short", gzip.compress(good)[:-20], PROTOBUF, {"Content-Encoding": "gzip"})

        # Still serving, and still storing.
        valid = fresh_ids(base, rng)
        status, _, _ = send(collector.url, json.dumps(valid).encode(), JSON, {})
        assert status == 200
        trace = _spans(valid)[0]["traceId"]
        assert collector.store.sql("SELECT count(*) FROM spans WHERE trace_id = ?", [trace]) == [(len(_spans(valid)),)]
        assert collector.stats.spans_committed > len(_spans(valid))

    assert answered.get(200, 0) > 0 and answered.get(400, 0) > 0, answered
    failed_writes = [r.getMessage() for r in caplog.records if r.name == "flightrec.collector"]
    assert failed_writes == [], "the writer met spans that validation let through"
    with tracer.Store(db, read_only=True) as store:
        result = store.verify_requests()
    assert result.failures == [], result.failures[:5]
    assert result.exact > 0
