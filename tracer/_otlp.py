"""Decoding OTLP/HTTP trace requests into span records, and encoding the collector's answer.

A request body is checked in this order, and the first failure is the answer for the whole
request: media type (415), content encoding (415), size after decompression (413), the number
of spans and, over OTLP/JSON, of values (413: decoding costs per item, and a small body can
hold millions), then the payload itself (400). Inside a well-formed request each span is checked
on its own: a span with bad ids, an end before its start or attributes nested too deeply is
rejected and counted, then checked for what the store can take (``_validate``), and the others
are kept (OTLP partial success).

Both encodings become the same ``opentelemetry.proto`` messages before they are read, so that
one function (``_record``) maps a span to a ``SpanRecord`` whatever the wire format was. The
mapping gives what ``_ingest.from_readable`` gives for the SDK span the request was made from:
sequences are tuples, maps are dicts, an empty ``AnyValue`` is ``None`` and ``bytes_value``
stays ``bytes`` (the SDK keeps bytes attributes as bytes too).

Nesting is bounded twice. An attribute value nested more than 32 levels (arrays and maps) rejects
its span. Before that, the protobuf decoder refuses a request nested 100 messages deep, and
answering 400 is all that is left: that is 48 levels of arrays, but only 32 of maps (a map level
is three messages), so over protobuf a map nested 32 levels fails its whole request. OTLP/JSON
spans are parsed one by one, with room for 33 levels of maps, so there a span too deep for the
parser is rejected alone, as malformed.

Decoding takes no lock and keeps no state: call it from any thread.
"""

from __future__ import annotations

import binascii
import json
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.trace import SpanKind, StatusCode

from ._errors import FlightrecError
from ._ingest import SpanRecord
from ._validate import check, describe

MAX_BODY = 16 * 1024 * 1024
"""Largest request body accepted, in bytes after decompression."""

MAX_SPANS = 50_000
"""Spans one request may hold. Decoding costs per span, not per byte: 16 MB of empty OTLP/JSON
spans (``{},``), 16 KB once gzipped, took about a minute of CPU to reject span by span."""
_JSON_VALUES = 500_000
"""Objects, arrays and commas an OTLP/JSON body may hold: counted in the raw bytes before it is
parsed, because parsing costs per value (about 5 µs each for OTLP/JSON, against 1 µs over
protobuf) and a value takes as little as 2 bytes. Real OTLP/JSON has about 23,000 a MB
(benchmarks/RESULTS.md §21), so a 16 MB body of real spans passes."""

_MAX_DEPTH = 32
"""Levels of arrays and maps an attribute value may nest; a deeper one rejects its span."""
_JSON_MESSAGE_DEPTH = 3 * (_MAX_DEPTH + 1) + 5
"""Message depth the JSON parser allows a span: a map level is three messages, and one level past
``_MAX_DEPTH`` must parse so that the span is rejected for its depth, as over protobuf."""

_PROTOBUF_TYPES = ("application/x-protobuf", "application/protobuf")
_JSON_TYPE = "application/json"
_ACCEPTED_TYPES = "application/x-protobuf or application/json"
_JSON_SPEC = "see https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding"

_KINDS = {
    Span.SPAN_KIND_UNSPECIFIED: SpanKind.INTERNAL.name,
    Span.SPAN_KIND_INTERNAL: SpanKind.INTERNAL.name,
    Span.SPAN_KIND_SERVER: SpanKind.SERVER.name,
    Span.SPAN_KIND_CLIENT: SpanKind.CLIENT.name,
    Span.SPAN_KIND_PRODUCER: SpanKind.PRODUCER.name,
    Span.SPAN_KIND_CONSUMER: SpanKind.CONSUMER.name,
}
_STATUS_CODES = {code.value: code.name for code in StatusCode}  # the SDK's values are OTLP's codes

_NO_TRACE_ID = bytes(16)
_NO_SPAN_ID = bytes(8)


class OtlpError(FlightrecError):
    """An OTLP request cannot be accepted at all; ``status`` is the HTTP status to answer with.

    400 for a malformed body, 413 for one too large, 415 for an unsupported media type or
    content encoding.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Rejected(Exception):
    """One span cannot be accepted; the message is the reason, as counted in the reply."""


def decode_request(body: bytes, content_type: str | None, content_encoding: str | None = None,
                   *, max_body: int = MAX_BODY,
                   reserve: Callable[[int], None] = lambda size: None) -> tuple[list[SpanRecord], int, str]:
    """Decodes the body of an OTLP/HTTP ``/v1/traces`` request.

    Args:
        body: The request body as received (possibly gzip-compressed).
        content_type: The ``Content-Type`` header: ``application/x-protobuf``,
            ``application/protobuf`` or ``application/json``, parameters allowed.
        content_encoding: The ``Content-Encoding`` header: absent, ``identity`` or ``gzip``.
        max_body: Largest body accepted after decompression, in bytes. Decompression stops
            one byte past it, so a gzip bomb costs at most that much memory.
        reserve: Called with each number of payload bytes before they are decoded: the body
            when uncompressed, else each piece (at most 1 MiB) as it is decompressed. It may
            raise to refuse them (the collector's byte budget); the exception propagates.

    Returns:
        The accepted spans, the number of spans rejected and, when some were or some values
        were not stored as sent, a message saying why (``"3 spans rejected: invalid trace_id (2),
        end before start (1)"``, see ``_validate.describe``), else ``""``.

    Raises:
        OtlpError: The request as a whole cannot be accepted; its ``status`` says how to answer.
    """
    is_json = _is_json(content_type)
    data = _decompress(body, content_encoding, max_body, reserve)
    if is_json:
        spans = _json_spans(data)
    else:
        spans = _protobuf_spans(data)
    records: list[SpanRecord] = []
    reasons: Counter[str] = Counter()
    notes: Counter[str] = Counter()
    for item in spans:
        if isinstance(item, SpanRecord):
            reason = check(item, notes)  # what the store cannot take, found before the writer meets it
            if reason is None:
                records.append(item)
                continue
            item = reason
        reasons[item] += 1
    return records, sum(reasons.values()), describe(reasons, notes)


def encode_response(rejected: int, message: str, content_type: str) -> bytes:
    """The body of a successful answer: an ``ExportTraceServiceResponse``.

    Args:
        rejected: Spans rejected from the request; when above 0, or when there is a message,
            the response carries ``partial_success`` with this count and ``message`` (with 0
            rejected, OTLP reads the message as a warning).
        message: Why, as ``decode_request`` returned it.
        content_type: The request's ``Content-Type``; the answer is OTLP/JSON for
            ``application/json`` and protobuf otherwise.
    """
    response = ExportTraceServiceResponse()
    if rejected > 0 or message:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message
    if _media_type(content_type) == _JSON_TYPE:
        return json.dumps(json_format.MessageToDict(response), separators=(",", ":")).encode()
    return response.SerializeToString()


def _media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _is_json(content_type: str | None) -> bool:
    media = _media_type(content_type)
    if media == _JSON_TYPE:
        return True
    if media in _PROTOBUF_TYPES:
        return False
    given = f"Content-Type {content_type!r}" if content_type else "no Content-Type"
    raise OtlpError(415, f"unsupported media type: {given}; send OTLP traces as {_ACCEPTED_TYPES}")


def _too_large(max_body: int) -> OtlpError:
    return OtlpError(413, f"request body is over the limit of {max_body} bytes after decompression; "
                          "send smaller batches")


_INFLATE_STEP = 1024 * 1024
"""Bytes decompressed at a time, each piece reserved as it comes out."""
_GZIP_MEMBERS = 64
"""Concatenated gzip members a body may hold: clients send one, and each costs a new inflater."""


def _check_spans(count: int) -> None:
    if count > MAX_SPANS:
        raise OtlpError(413, f"request of {count} spans is over the limit of {MAX_SPANS} a request; "
                             "send smaller batches")


def _decompress(body: bytes, content_encoding: str | None, max_body: int,
                reserve: Callable[[int], None]) -> bytes:
    encoding = (content_encoding or "").strip().lower()
    if encoding in ("", "identity"):
        if len(body) > max_body:
            raise _too_large(max_body)
        reserve(len(body))
        return body
    if encoding not in ("gzip", "x-gzip"):
        raise OtlpError(415, f"unsupported Content-Encoding {content_encoding!r}; send the body uncompressed "
                             "or with Content-Encoding: gzip")
    chunks: list[bytes] = []
    total = members = 0
    data = body
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    while True:  # a step at a time; a new inflater per gzip member
        try:
            # max_length keeps the output, hence memory, at most one byte over the limit.
            step = min(_INFLATE_STEP, max_body + 1 - total)
            chunk = inflater.decompress(data, step)
        except zlib.error as exc:
            raise OtlpError(400, f"corrupt gzip body ({exc}); send a valid gzip stream or an uncompressed "
                                 "body") from None
        total += len(chunk)
        if total > max_body:
            raise _too_large(max_body)
        reserve(len(chunk))
        chunks.append(chunk)
        if not inflater.eof:
            if not inflater.unconsumed_tail and len(chunk) < step:
                raise OtlpError(400, "truncated gzip body; send the complete gzip stream")
            data = inflater.unconsumed_tail  # the step is out; the member goes on
            continue
        data = inflater.unused_data
        if not data:  # concatenated members are one valid gzip body
            return b"".join(chunks) if len(chunks) > 1 else chunks[0]
        members += 1
        if members >= _GZIP_MEMBERS:
            raise OtlpError(400, f"gzip body of more than {_GZIP_MEMBERS} concatenated members; "
                                 "compress the request as one gzip stream")
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)


# --- protobuf ---------------------------------------------------------------------------------


def _protobuf_spans(data: bytes) -> Iterator[SpanRecord | str]:
    request = ExportTraceServiceRequest()
    try:
        request.ParseFromString(data)
    except (DecodeError, RecursionError) as exc:
        raise OtlpError(400, f"malformed protobuf ({exc}); send a serialized ExportTraceServiceRequest "
                             "(opentelemetry.proto.collector.trace.v1)") from None
    _check_spans(sum(len(scope_spans.spans) for resource_spans in request.resource_spans
                     for scope_spans in resource_spans.scope_spans))
    for resource_spans in request.resource_spans:
        scopes = ((scope_spans.scope.name, scope_spans.spans) for scope_spans in resource_spans.scope_spans)
        yield from _resource_records(resource_spans.resource, scopes)


def _resource_records(resource: Resource, scopes: Iterable[tuple[str, Iterable[Span | str]]],
                      ) -> Iterator[SpanRecord | str]:
    """Maps the spans under one resource; a span given as a string was rejected for that reason."""
    try:
        # One dict shared by the resource's spans, as from_readable shares it: the ingestor
        # serialises a resource once per object.
        attributes: dict[str, Any] | str = _attributes(resource.attributes)
    except _Rejected as exc:
        attributes = f"resource {exc}"
    for scope, spans in scopes:
        for span in spans:
            if isinstance(span, str):
                yield span
            elif isinstance(attributes, str):
                yield attributes
            else:
                try:
                    yield _record(span, attributes, scope)
                except _Rejected as exc:
                    yield str(exc)


def _record(span: Span, resource: dict[str, Any], scope: str) -> SpanRecord:
    trace_id, span_id, parent = span.trace_id, span.span_id, span.parent_span_id
    if len(trace_id) != 16 or trace_id == _NO_TRACE_ID:
        raise _Rejected("invalid trace_id")
    if len(span_id) != 8 or span_id == _NO_SPAN_ID:
        raise _Rejected("invalid span_id")
    if parent and len(parent) != 8:
        raise _Rejected("invalid parent_span_id")
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    if end < start:
        raise _Rejected("end before start")
    links = []
    for link in span.links:
        if len(link.trace_id) != 16 or len(link.span_id) != 8:
            raise _Rejected("invalid link id")
        links.append({"trace_id": link.trace_id.hex(), "span_id": link.span_id.hex(),
                      "attributes": _attributes(link.attributes)})
    status = span.status
    return SpanRecord(
        trace_id=trace_id.hex(),
        span_id=span_id.hex(),
        # All zeros is "no parent" too: the SDK never gives a span an invalid parent.
        parent_span_id=parent.hex() if parent and parent != _NO_SPAN_ID else None,
        name=span.name,
        kind=_KINDS.get(span.kind, SpanKind.INTERNAL.name),
        start_ns=start,
        end_ns=end,
        status_code=_STATUS_CODES.get(status.code, StatusCode.UNSET.name),
        status_message=status.message or None,
        attributes=_attributes(span.attributes),
        events=[{"name": e.name, "time_ns": e.time_unix_nano, "attributes": _attributes(e.attributes)}
                for e in span.events],
        links=links,
        resource=resource,
        scope=scope,
    )


def _attributes(pairs: Iterable[KeyValue]) -> dict[str, Any]:
    # Strings and integers are most values (85% in the reference workload's spans): read here, they
    # skip a call to _value each, ~10% of decoding.
    out: dict[str, Any] = {}
    for kv in pairs:
        value = kv.value
        which = value.WhichOneof("value")
        if which == "string_value":
            out[kv.key] = value.string_value
        elif which == "int_value":
            out[kv.key] = value.int_value
        else:
            out[kv.key] = _value(value, 0)
    return out


def _value(value: AnyValue, depth: int) -> Any:
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which is None:
        return None
    if which == "array_value":
        if depth >= _MAX_DEPTH:
            raise _Rejected(f"attributes nested deeper than {_MAX_DEPTH} levels")
        return tuple(_value(v, depth + 1) for v in value.array_value.values)  # a tuple, as the SDK holds it
    if which == "kvlist_value":
        if depth >= _MAX_DEPTH:
            raise _Rejected(f"attributes nested deeper than {_MAX_DEPTH} levels")
        return {kv.key: _value(kv.value, depth + 1) for kv in value.kvlist_value.values}
    return getattr(value, which)  # bool, int, float or bytes


# --- OTLP/JSON --------------------------------------------------------------------------------


def _malformed_json(what: str) -> OtlpError:
    return OtlpError(400, f"malformed OTLP/JSON: {what}; send an ExportTraceServiceRequest as OTLP/JSON "
                          f"({_JSON_SPEC})")


def _json_spans(data: bytes) -> Iterator[SpanRecord | str]:
    values = data.count(b"{") + data.count(b"[") + data.count(b",")  # at C speed; strings' own count too
    if values > _JSON_VALUES:
        raise OtlpError(413, f"OTLP/JSON body with over {_JSON_VALUES} values ({values} objects, arrays and commas); "
                             "send smaller batches, or OTLP/protobuf")
    try:
        request = json.loads(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise _malformed_json(f"not JSON ({exc})") from None
    if not isinstance(request, dict):
        raise _malformed_json("the body is not a JSON object")
    # Parse the whole structure before yielding: a shape error anywhere fails the whole request.
    resources = []
    resource_list = _json_list(request, "resourceSpans", "resource_spans")
    _check_spans(sum(len(_json_list(scope_spans, "spans", "spans")) for resource_spans in resource_list
                     for scope_spans in _json_list(resource_spans, "scopeSpans", "scope_spans")))
    for resource_spans in resource_list:
        scope_list = _json_list(resource_spans, "scopeSpans", "scope_spans")
        resource = _json_message(resource_spans, "resource", Resource())
        scopes = []
        for scope_spans in scope_list:
            span_list = _json_list(scope_spans, "spans", "spans")
            scope = _json_message(scope_spans, "scope", InstrumentationScope())
            scopes.append((scope.name, [_json_span(span) for span in span_list]))
        resources.append((resource, scopes))
    return (item for resource, scopes in resources for item in _resource_records(resource, scopes))


def _json_list(parent: Any, camel: str, snake: str) -> list[Any]:
    if not isinstance(parent, dict):
        raise _malformed_json(f"expected an object holding {camel}, got {type(parent).__name__}")
    value = parent.get(camel, parent.get(snake))
    if value is None:
        return []
    if not isinstance(value, list):
        raise _malformed_json(f"{camel} must be a list, got {type(value).__name__}")
    return value


def _json_message(parent: dict[str, Any], key: str, message: Any) -> Any:
    value = parent.get(key)
    if value is None:
        return message
    if not isinstance(value, dict):
        raise _malformed_json(f"{key} must be an object, got {type(value).__name__}")
    try:
        return json_format.ParseDict(value, message, ignore_unknown_fields=True)
    except (json_format.ParseError, RecursionError, OverflowError, ValueError, TypeError) as exc:
        raise _malformed_json(f"bad {key} ({_clip(str(exc))})") from None


def _json_span(obj: Any) -> Span | str:
    """One OTLP/JSON span as a proto ``Span``, or the reason it is rejected.

    OTLP/JSON writes ids as hex, where the proto3 JSON mapping would use base64, so they are
    taken out and set on the message after it is parsed.
    """
    if not isinstance(obj, dict):
        return "malformed span"
    fields = dict(obj)
    ids = [_json_id(fields, "traceId", "trace_id"), _json_id(fields, "spanId", "span_id"),
           _json_id(fields, "parentSpanId", "parent_span_id")]
    link_ids = []
    links = fields.get("links")
    if isinstance(links, list):
        fields["links"] = bare_links = []
        for link in links:
            if not isinstance(link, dict):
                return "malformed span"
            link = dict(link)
            link_ids.append((_json_id(link, "traceId", "trace_id"), _json_id(link, "spanId", "span_id")))
            bare_links.append(link)
    try:
        span = json_format.ParseDict(fields, Span(), ignore_unknown_fields=True,
                                     max_recursion_depth=_JSON_MESSAGE_DEPTH)
    # protobuf's parser lets some bad numbers through as Python errors ("kind": 1e400 is an OverflowError).
    except (json_format.ParseError, RecursionError, OverflowError, ValueError, TypeError) as exc:
        return f"malformed span: {_clip(str(exc))}"
    for name, value in zip(("trace_id", "span_id", "parent_span_id"), ids):
        if value is None:
            return f"invalid {name}"
        setattr(span, name, value)
    for link, (trace_id, span_id) in zip(span.links, link_ids):
        if trace_id is None or span_id is None:
            return "invalid link id"
        link.trace_id, link.span_id = trace_id, span_id
    return span


def _json_id(fields: dict[str, Any], camel: str, snake: str) -> bytes | None:
    """Pops a hex id from ``fields``: its bytes, ``b""`` when absent, ``None`` when not hex."""
    value = fields.pop(camel, None)
    snake_value = fields.pop(snake, None)
    value = value if value is not None else snake_value
    if value is None:
        return b""
    if not isinstance(value, str):
        return None
    try:
        return binascii.unhexlify(value)
    except (binascii.Error, ValueError):  # odd length, a non-hex digit, a non-ASCII character
        return None


def _clip(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
