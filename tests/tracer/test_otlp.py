"""Decoding OTLP/HTTP trace requests: real SDK spans through the real OTLP encoder, in protobuf
and in OTLP/JSON, plus the hostile bodies a collector must refuse without falling over."""

from __future__ import annotations

import base64
import gzip
import json
import tracemalloc
import zlib

import pytest
from google.protobuf import json_format
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from tracer._errors import FlightrecError
from tracer._ingest import Ingestor, SpanRecord, from_readable
from tracer._otlp import MAX_BODY, OtlpError, decode_request, decode_slices, encode_response

PROTOBUF = "application/x-protobuf"
JSON = "application/json"

ATTRIBUTES = {
    "text": "héllo", "empty_text": "", "flag": True, "off": False, "count": 42, "negative": -7,
    "huge": 2**63 - 1, "ratio": 0.25, "whole_float": 3.0, "raw": b"\x00\xffbytes", "nothing": None,
    "words": ["a", "b"], "flags": [True, False], "ints": [1, 2, 3], "floats": [0.5, 1.5], "no_items": [],
    "mixed": [1, "two", 3.0, None, b"4"], "nested": [[1, 2], ["x", ["y"]]],
    "mapping": {"key": "value", "inner": {"numbers": [1, 2], "deep": {"flag": True}}},
}


@pytest.fixture
def sdk_spans() -> list:
    """Finished SDK spans covering every field a SpanRecord holds, from two resources."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "agent", "team.tags": ["a", "b"],
                                                        "build": 7}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    worker = TracerProvider(resource=Resource({"service.name": "worker"}))
    worker.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("flightrec.test", "1.2.3")
    other = provider.get_tracer("other.scope")

    with tracer.start_as_current_span("root", kind=SpanKind.SERVER, attributes=ATTRIBUTES) as root:
        root.add_event("started", {"step": 1, "tags": ("x", "y"), "blob": b"\x01"})
        root.add_event("bare")
        with other.start_as_current_span(
                "child", kind=SpanKind.CLIENT,
                links=[Link(root.get_span_context(), {"why": "retry", "attempts": [1, 2]}),
                       Link(root.get_span_context())]) as child:
            child.set_status(Status(StatusCode.ERROR, "boom"))
            child.record_exception(ValueError("bad value"))
        with tracer.start_as_current_span("ok", kind=SpanKind.PRODUCER) as ok:
            ok.set_status(Status(StatusCode.OK))
    remote = SpanContext(0x0123456789ABCDEF0123456789ABCDEF, 0x1122334455667788, is_remote=True,
                         trace_flags=TraceFlags(TraceFlags.SAMPLED))
    with worker.get_tracer("worker.scope").start_as_current_span(
            "consume", kind=SpanKind.CONSUMER, context=trace.set_span_in_context(NonRecordingSpan(remote))):
        pass
    spans = list(exporter.get_finished_spans())
    assert len(spans) == 4
    return spans


def by_span_id(records: list[SpanRecord]) -> dict[str, SpanRecord]:
    return {r.span_id: r for r in records}


def expected(spans: list) -> dict[str, SpanRecord]:
    return by_span_id([from_readable(s) for s in spans])


def otlp_json(request: ExportTraceServiceRequest, *, integer_enums: bool = False, upper: bool = False) -> bytes:
    """The request as OTLP/JSON: the proto3 JSON mapping, but with ids in hex, as the OTLP spec says."""
    body = json_format.MessageToDict(request, use_integers_for_enums=integer_enums)

    def to_hex(holder: dict, key: str) -> None:
        if key in holder:
            hexed = base64.b64decode(holder[key]).hex()
            holder[key] = hexed.upper() if upper else hexed

    for resource_spans in body.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    to_hex(span, key)
                for link in span.get("links", []):
                    to_hex(link, "traceId")
                    to_hex(link, "spanId")
    return json.dumps(body).encode()


def stored_rows(records: list[SpanRecord]) -> list:
    return sorted(Ingestor().build(records).spans, key=lambda row: row[1])


# --- the round trip ------------------------------------------------------------------------------


def test_sdk_spans_sent_as_protobuf_decode_to_exactly_what_the_embedded_exporter_records(sdk_spans):
    body = encode_spans(sdk_spans).SerializeToString()

    records, rejected, message = decode_request(body, PROTOBUF)

    assert (rejected, message) == (0, "")
    assert by_span_id(records) == expected(sdk_spans)
    # Equal values could still be stored differently (key order, tuple or list): compare the rows.
    assert stored_rows(records) == stored_rows([from_readable(s) for s in sdk_spans])


@pytest.mark.parametrize("content_type", [PROTOBUF, JSON])
def test_a_request_decoded_a_slice_at_a_time_gives_the_same_records_in_slices_of_about_the_size_asked(
        sdk_spans, content_type):
    request = encode_spans(sdk_spans)
    body = request.SerializeToString() if content_type == PROTOBUF else otlp_json(request)

    decoded = decode_slices(body, content_type, slice_bytes=1)
    slices = list(decoded.slices())

    assert [len(records) for records in slices] == [1] * len(sdk_spans)  # two resources, three scopes
    assert [r for records in slices for r in records] == decode_request(body, content_type)[0]
    assert (decoded.rejected, decoded.message) == (0, "")
    assert [len(records) for records in decode_slices(body, content_type, slice_bytes=len(body)).slices()] == [
        len(sdk_spans)]


def test_unknown_fields_and_groups_are_skipped_at_every_level_as_the_protobuf_library_skips_them(sdk_spans):
    def unknown(number: int) -> bytes:  # a varint, a fixed64, a string and a group holding a fixed32
        return (bytes([number << 3, 1, number << 3 | 1]) + bytes(8) + _field(number, b"x")
                + bytes([number << 3 | 3, 8 << 3 | 5]) + bytes(4) + bytes([number << 3 | 4]))

    request = ExportTraceServiceRequest()
    scope_spans = request.resource_spans.add().scope_spans.add()
    scope_spans.scope.name = "s"
    scope_spans.spans.add(trace_id=TRACE_ID, span_id=SPAN_ID, name="op", start_time_unix_nano=1, end_time_unix_nano=2)
    plain = decode_request(request.SerializeToString(), PROTOBUF)
    scope = unknown(9) + scope_spans.SerializeToString() + unknown(10)
    body = unknown(7) + _field(1, unknown(8) + _field(2, scope)) + unknown(11)
    parsed = ExportTraceServiceRequest.FromString(body)  # what the library makes of it
    parsed.DiscardUnknownFields()
    assert parsed == request
    assert decode_request(body, PROTOBUF) == plain and len(plain[0]) == 1


@pytest.mark.parametrize("body", [b"\x0a\x05\x12\x03", b"\x0a\xff", b"\x07", b"\x0a\x02\x12\x00\x00",
                                  b"\x1b\x0a\x01"],
                         ids=["length past the end", "truncated varint", "wire type 7", "field number 0",
                              "group never ended"])
def test_a_request_whose_structure_is_not_protobuf_fails_whole_before_any_slice(body):
    with pytest.raises(OtlpError) as caught:
        decode_slices(body, PROTOBUF)
    assert caught.value.status == 400 and "malformed protobuf" in str(caught.value)


def test_the_round_trip_covers_every_field(sdk_spans):
    records = by_span_id(decode_request(encode_spans(sdk_spans).SerializeToString(), PROTOBUF)[0])
    root, child, ok, consume = (records[f"{s.context.span_id:016x}"] for s in
                                sorted(sdk_spans, key=lambda s: ["root", "child", "ok", "consume"].index(s.name)))

    assert root.kind == "SERVER" and root.parent_span_id is None and root.scope == "flightrec.test"
    assert root.attributes["nested"] == ((1, 2), ("x", ("y",)))
    assert root.attributes["mapping"]["inner"]["deep"] == {"flag": True}
    assert root.attributes["raw"] == b"\x00\xffbytes" and root.attributes["nothing"] is None
    assert [e["name"] for e in root.events] == ["started", "bare"]
    assert root.resource["team.tags"] == ("a", "b") and root.resource["build"] == 7
    assert (child.kind, child.status_code, child.status_message) == ("CLIENT", "ERROR", "boom")
    assert child.parent_span_id == root.span_id and child.scope == "other.scope"
    assert child.links[0] == {"trace_id": root.trace_id, "span_id": root.span_id,
                              "attributes": {"why": "retry", "attempts": (1, 2)}}
    assert child.events[0]["name"] == "exception"
    assert (ok.kind, ok.status_code, ok.status_message) == ("PRODUCER", "OK", None)
    assert consume.kind == "CONSUMER" and consume.parent_span_id == "1122334455667788"
    assert consume.trace_id == "0123456789abcdef0123456789abcdef" and consume.resource == {"service.name": "worker"}
    assert root.resource is child.resource  # one dict per resource, so the ingestor serialises it once


@pytest.mark.parametrize("variant", [{}, {"integer_enums": True}, {"upper": True}],
                         ids=["enum names", "integer enums", "upper-case hex ids"])
def test_the_same_spans_as_otlp_json_decode_to_the_same_records(sdk_spans, variant):
    body = otlp_json(encode_spans(sdk_spans), **variant)

    records, rejected, _ = decode_request(body, "application/json; charset=utf-8")

    assert rejected == 0
    assert by_span_id(records) == expected(sdk_spans)
    assert stored_rows(records) == stored_rows([from_readable(s) for s in sdk_spans])


def test_otlp_json_accepts_numbers_for_64_bit_integers(sdk_spans):
    body = json.loads(otlp_json(encode_spans(sdk_spans)))
    for resource_spans in body["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                span["startTimeUnixNano"] = int(span["startTimeUnixNano"])
                span["endTimeUnixNano"] = int(span["endTimeUnixNano"])

    records, rejected, _ = decode_request(json.dumps(body).encode(), JSON)

    assert rejected == 0 and by_span_id(records) == expected(sdk_spans)


def test_gzip_bodies_decode_like_plain_ones(sdk_spans):
    body = encode_spans(sdk_spans).SerializeToString()
    half = len(body) // 2

    plain = decode_request(body, PROTOBUF)
    assert decode_request(gzip.compress(body), PROTOBUF, "gzip") == plain
    assert decode_request(gzip.compress(body[:half]) + gzip.compress(body[half:]), PROTOBUF, "GZIP") == plain
    assert decode_request(body, PROTOBUF, "identity") == plain


def test_an_empty_protobuf_request_is_accepted_with_no_spans():
    assert decode_request(b"", PROTOBUF) == ([], 0, "")
    assert decode_request(b"{}", JSON) == ([], 0, "")


# --- whole-request refusals ----------------------------------------------------------------------


def test_a_gzip_bomb_is_refused_without_inflating_it():
    deflater = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    bomb = b"".join(deflater.compress(zeros) for _ in range(64)) + deflater.flush()  # 64 MiB inflated
    assert len(bomb) < 1 << 20

    tracemalloc.start()
    try:
        with pytest.raises(OtlpError) as caught:
            decode_request(bomb, PROTOBUF, "gzip", max_body=1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert caught.value.status == 413 and "smaller batches" in str(caught.value)
    assert peak < 4 << 20


def test_a_bomb_of_many_gzip_members_is_refused_at_the_default_limit():
    member = gzip.compress(bytes(4 << 20))
    with pytest.raises(OtlpError) as caught:
        decode_request(member * 64, PROTOBUF, "gzip")  # 256 MiB inflated
    assert caught.value.status == 413


def test_bodies_over_the_limit_are_refused_413_and_at_the_limit_accepted():
    request = ExportTraceServiceRequest()
    request.resource_spans.add().resource.attributes.add(key="pad", value=AnyValue(string_value="x" * 100))
    body = request.SerializeToString()

    assert decode_request(body, PROTOBUF, max_body=len(body)) == ([], 0, "")
    assert decode_request(gzip.compress(body), PROTOBUF, "gzip", max_body=len(body)) == ([], 0, "")
    for encoded, encoding in ((body, None), (gzip.compress(body), "gzip")):
        with pytest.raises(OtlpError) as caught:
            decode_request(encoded, PROTOBUF, encoding, max_body=len(body) - 1)
        assert caught.value.status == 413
    assert MAX_BODY == 16 * 1024 * 1024


@pytest.mark.parametrize("content_type", [None, "", "text/plain", "application/grpc", "application/jsonl"])
def test_unsupported_media_types_are_refused_415_naming_the_accepted_ones(content_type):
    with pytest.raises(OtlpError) as caught:
        decode_request(b"", content_type)
    assert caught.value.status == 415
    assert "application/x-protobuf or application/json" in str(caught.value)


@pytest.mark.parametrize("content_type", ["application/protobuf", "Application/X-Protobuf; proto=x"])
def test_protobuf_media_type_spellings_are_accepted(content_type):
    assert decode_request(b"", content_type) == ([], 0, "")


@pytest.mark.parametrize("encoding", ["br", "deflate", "zstd", "gzip, gzip"])
def test_unsupported_content_encodings_are_refused_415(encoding):
    with pytest.raises(OtlpError) as caught:
        decode_request(gzip.compress(b""), PROTOBUF, encoding)
    assert caught.value.status == 415 and "gzip" in str(caught.value)


@pytest.mark.parametrize("body", [b"not gzip at all", gzip.compress(b"x" * 1000)[:-12], b"",
                                  gzip.compress(b"") + b"trailing junk"],
                         ids=["not gzip", "truncated", "empty", "trailing junk"])
def test_corrupt_gzip_is_refused_400(body):
    with pytest.raises(OtlpError) as caught:
        decode_request(body, PROTOBUF, "gzip")
    assert caught.value.status == 400 and "gzip" in str(caught.value)


def test_truncated_protobuf_is_refused_400(sdk_spans):
    body = encode_spans(sdk_spans).SerializeToString()
    with pytest.raises(OtlpError) as caught:
        decode_request(body[:-5], PROTOBUF)
    assert caught.value.status == 400
    assert "malformed protobuf" in str(caught.value) and "ExportTraceServiceRequest" in str(caught.value)


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe\x00", b"[1, 2]", b'"text"',
                                  b'{"resourceSpans": {}}', b'{"resourceSpans": [{"scopeSpans": 3}]}',
                                  b'{"resourceSpans": [7]}', b'{"resourceSpans": [{"resource": []}]}',
                                  b'{"resourceSpans": [{"resource": {"attributes": 1}}]}',
                                  b"[" * 100_000 + b"]" * 100_000],
                         ids=["syntax", "not utf-8", "array", "string", "resourceSpans object", "scopeSpans number",
                              "resourceSpans item", "resource array", "resource attributes", "nested 100k deep"])
def test_malformed_otlp_json_is_refused_400(body):
    with pytest.raises(OtlpError) as caught:
        decode_request(body, JSON)
    assert caught.value.status == 400 and "OTLP/JSON" in str(caught.value)


def test_otlp_errors_are_flightrec_errors():
    assert issubclass(OtlpError, FlightrecError)
    assert OtlpError(413, "too big").status == 413


# --- span-by-span rejection ----------------------------------------------------------------------

TRACE_ID = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")
SPAN_ID = bytes.fromhex("b7ad6b7169203331")


def request_of(*spans: dict) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    scope_spans = request.resource_spans.add().scope_spans.add()
    scope_spans.scope.name = "s"
    for fields in spans:
        span = scope_spans.spans.add(name="op", start_time_unix_nano=10, end_time_unix_nano=20)
        for key, value in fields.items():
            if key == "attributes":
                span.attributes.add(key="k").value.CopyFrom(value)
            else:
                setattr(span, key, value)
    return request


GOOD = {"trace_id": TRACE_ID, "span_id": SPAN_ID}
BAD_SPANS = [
    {"trace_id": TRACE_ID[:15], "span_id": SPAN_ID},
    {"trace_id": bytes(16), "span_id": SPAN_ID},
    {"trace_id": TRACE_ID, "span_id": bytes(8)},
    {"trace_id": TRACE_ID, "span_id": SPAN_ID + b"\x01"},
    {"trace_id": TRACE_ID, "span_id": SPAN_ID, "parent_span_id": b"\x01\x02\x03"},
    {"trace_id": TRACE_ID, "span_id": SPAN_ID, "start_time_unix_nano": 30},
    {"trace_id": TRACE_ID, "span_id": SPAN_ID, "end_time_unix_nano": 0},
]
BAD_MESSAGE = ("7 spans rejected: invalid trace_id (2), invalid span_id (2), end before start (2), "
               "invalid parent_span_id (1)")


@pytest.mark.parametrize("encode", [lambda r: (r.SerializeToString(), PROTOBUF), lambda r: (otlp_json(r), JSON)],
                         ids=["protobuf", "json"])
def test_invalid_spans_are_rejected_and_counted_and_the_rest_kept(encode):
    body, content_type = encode(request_of(GOOD, *BAD_SPANS, {**GOOD, "parent_span_id": bytes(8)}))

    records, rejected, message = decode_request(body, content_type)

    assert (rejected, message) == (7, BAD_MESSAGE)
    assert [(r.trace_id, r.span_id, r.parent_span_id) for r in records] == [
        (TRACE_ID.hex(), SPAN_ID.hex(), None), (TRACE_ID.hex(), SPAN_ID.hex(), None)]
    assert encode_response(rejected, message, content_type)  # the collector answers 200 with partial success


def test_otlp_json_spans_with_bad_ids_or_wrong_shapes_are_rejected_alone():
    good = {"traceId": TRACE_ID.hex(), "spanId": SPAN_ID.hex(), "name": "op"}
    spans = [good, {**good, "traceId": "not hex"}, {**good, "spanId": base64.b64encode(SPAN_ID).decode()},
             {**good, "traceId": 12}, {**good, "name": 5}, {**good, "startTimeUnixNano": "soon"}, "a span",
             {**good, "links": [{"traceId": "zz", "spanId": SPAN_ID.hex()}]}]
    body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}).encode()

    records, rejected, message = decode_request(body, JSON)

    assert [r.name for r in records] == ["op"] and rejected == 7
    assert message.startswith("7 spans rejected: invalid trace_id (2), ")
    assert "invalid span_id (1)" in message and "invalid link id (1)" in message
    assert "malformed span: Failed to parse name field" in message and "malformed span (1)" in message


def nested_value(levels: int, container: str) -> AnyValue:
    value = AnyValue(int_value=1)
    for _ in range(levels):
        outer = AnyValue()
        if container == "array":
            outer.array_value.values.add().CopyFrom(value)
        else:
            outer.kvlist_value.values.add(key="k").value.CopyFrom(value)
        value = outer
    return value


@pytest.mark.parametrize("container, content_type", [("array", PROTOBUF), ("array", JSON), ("kvlist", JSON)])
def test_a_span_whose_attributes_nest_deeper_than_32_levels_is_rejected(container, content_type):
    request = request_of({**GOOD, "attributes": nested_value(32, container)},
                         {**GOOD, "attributes": nested_value(33, container)})
    body = request.SerializeToString() if content_type == PROTOBUF else otlp_json(request)

    records, rejected, message = decode_request(body, content_type)

    assert len(records) == 1 and rejected == 1
    assert records[0].attributes["k"] == nested_value_python(32, container)
    assert message == "1 span rejected: attributes nested deeper than 32 levels (1)"


def nested_value_python(levels: int, container: str) -> object:
    value: object = 1
    for _ in range(levels):
        value = (value,) if container == "array" else {"k": value}
    return value


def test_maps_nested_32_levels_over_protobuf_hit_the_decoders_limit_and_reject_their_span_alone():
    # A map level is three messages and upb stops at 100: what _otlp.py's docstring warns of. Spans
    # are parsed a slice at a time, and a span that does not parse is rejected without its request.
    assert decode_request(request_of({**GOOD, "attributes": nested_value(31, "kvlist")}).SerializeToString(),
                          PROTOBUF)[1] == 0
    records, rejected, message = decode_request(
        request_of(GOOD, {**GOOD, "attributes": nested_value(32, "kvlist")}).SerializeToString(), PROTOBUF)
    assert (len(records), rejected) == (1, 1)
    assert message.startswith("1 span rejected: malformed span")


def test_resource_attributes_nested_too_deeply_reject_the_resources_spans():
    request = request_of(GOOD, GOOD)
    request.resource_spans[0].resource.attributes.add(key="r").value.CopyFrom(nested_value(40, "array"))

    records, rejected, message = decode_request(request.SerializeToString(), PROTOBUF)

    assert (records, rejected) == ([], 2)
    assert message == "2 spans rejected: resource attributes nested deeper than 32 levels (2)"


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field, by hand: the protobuf library refuses to build this deep."""
    def varint(n: int) -> bytes:
        out = bytearray()
        while n > 0x7F:
            out.append(n & 0x7F | 0x80)
            n >>= 7
        return bytes(out + bytes([n]))
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def test_attributes_nested_past_the_protobuf_limit_reject_their_span_not_a_crash():
    value = _field(1, b"leaf")  # AnyValue.string_value
    for _ in range(5000):
        value = _field(5, _field(1, value))  # AnyValue.array_value -> ArrayValue.values
    span = _field(1, TRACE_ID) + _field(2, SPAN_ID) + _field(9, _field(1, b"k") + _field(2, value))
    body = _field(1, _field(2, _field(2, span)))  # request.resource_spans.scope_spans.spans

    records, rejected, message = decode_request(body, PROTOBUF)
    assert (records, rejected) == ([], 1)  # the collector answers 400: nothing in the request can be stored
    assert message.startswith("1 span rejected: malformed span")


def test_otlp_json_attributes_nested_past_the_parser_limit_reject_only_their_span():
    value: dict = {"intValue": "1"}
    for _ in range(300):
        value = {"arrayValue": {"values": [value]}}
    good = {"traceId": TRACE_ID.hex(), "spanId": SPAN_ID.hex(), "name": "op"}
    deep = {**good, "attributes": [{"key": "k", "value": value}]}
    body = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [good, deep]}]}]}).encode()

    records, rejected, message = decode_request(body, JSON)

    assert len(records) == 1 and rejected == 1 and "malformed span" in message


# --- the response --------------------------------------------------------------------------------


def test_the_protobuf_response_carries_partial_success_only_when_spans_were_rejected():
    response = ExportTraceServiceResponse.FromString(encode_response(3, "3 spans rejected: x (3)", PROTOBUF))
    assert response.partial_success.rejected_spans == 3
    assert response.partial_success.error_message == "3 spans rejected: x (3)"

    assert not ExportTraceServiceResponse.FromString(encode_response(0, "", PROTOBUF)).HasField("partial_success")


def test_the_json_response_is_otlp_json_for_json_requests():
    body = encode_response(2, "2 spans rejected: end before start (2)", "application/json; charset=utf-8")

    response = json_format.Parse(body, ExportTraceServiceResponse())

    assert json.loads(body)["partialSuccess"]["errorMessage"] == "2 spans rejected: end before start (2)"
    assert response.partial_success.rejected_spans == 2
    assert json.loads(encode_response(0, "", JSON)) == {}
