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

A request is decoded a slice at a time (``decode_slices``), so that a large one is never held
whole in its decoded form: its structure is checked whole first, and the failures above fail the
request before any slice is decoded; a span that does not parse fails only itself (rejected as
malformed), since slices before it may be stored by then.

Nesting is bounded twice. An attribute value nested more than 32 levels (arrays and maps) rejects
its span. Before that, the protobuf decoder refuses a message nested 100 deep: that is 48 levels
of arrays, but only 32 of maps (a map level is three messages), so over protobuf a map nested 32
levels rejects its span as malformed. OTLP/JSON spans are parsed one by one, with room for 33
levels of maps, so there such a span is rejected for its depth.

Decoding takes no lock and keeps no state: call it from any thread.
"""

from __future__ import annotations

import binascii
import itertools
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
from ._format import clip_text
from ._ingest import SpanRecord
from ._validate import check, describe

MAX_BODY = 16 * 1024 * 1024
"""Largest request body accepted, in bytes after decompression."""

SLICE_BYTES = 1024 * 1024
"""Payload bytes of a request decoded and handed to the writer at a time: decoded, a byte of
payload takes up to 17 in memory (benchmarks/RESULTS.md §32), so a 16 MB request is not held
whole in its decoded form. A MiB is about 270 realistic spans, enough for a commit's fixed cost
not to dominate, and slices of requests in flight together share a transaction."""

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
    """Decodes the body of an OTLP/HTTP ``/v1/traces`` request, all of its spans at once.

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
    decoded = decode_slices(body, content_type, content_encoding, max_body=max_body, reserve=reserve)
    records = [record for records in decoded.slices() for record in records]
    return records, decoded.rejected, decoded.message


def decode_slices(body: bytes, content_type: str | None, content_encoding: str | None = None,
                  *, max_body: int = MAX_BODY, reserve: Callable[[int], None] = lambda size: None,
                  slice_bytes: int = SLICE_BYTES) -> Decoded:
    """``decode_request`` a slice at a time: the request is checked as a whole now (the same errors,
    raised here), and its spans are decoded and mapped as ``Decoded.slices`` is iterated, each slice
    of about ``slice_bytes`` of payload, so that only a slice's decoded form need be in memory
    (OTLP/protobuf; an OTLP/JSON body is parsed whole, then mapped a slice at a time).
    """
    is_json = _is_json(content_type)
    data = _decompress(body, content_encoding, max_body, reserve)
    decoded = Decoded(slice_bytes)
    decoded._slices = _json_slices(data, slice_bytes) if is_json else _protobuf_slices(data, decoded)
    return decoded


class Decoded:
    """A request that passed the checks of the whole, its spans decoded on demand, a slice at a time."""

    def __init__(self, slice_bytes: int) -> None:
        self.slice_bytes = slice_bytes
        """Payload bytes the next slice decodes, about (whole spans, one at least): the caller may change
        it between two slices (the collector does, for a request dense in objects). OTLP/JSON, parsed
        whole, keeps its first."""
        self.sliced_bytes = 0
        """Payload bytes of the slice last decoded (OTLP/protobuf; 0 for OTLP/JSON)."""
        self._slices: Iterator[list[SpanRecord | str]] = iter(())
        self._reasons: Counter[str] = Counter()
        self._notes: Counter[str] = Counter()

    def slices(self) -> Iterator[list[SpanRecord]]:
        """The accepted spans, a non-empty list a slice, each decoded only when asked for: drop a
        slice before asking for the next, and only one is held. Iterate once."""
        for items in self._slices:
            records = []
            for item in items:
                if isinstance(item, SpanRecord):
                    reason = check(item, self._notes)  # what the store cannot take, found before the writer meets it
                    if reason is None:
                        records.append(item)
                        continue
                    item = reason
                self._reasons[item] += 1
            del items
            if records:
                yield records

    def reject(self, count: int, reason: str) -> None:
        """Counts ``count`` accepted spans as rejected after all, for ``reason`` (the store could not take them)."""
        self._reasons[reason] += count

    @property
    def rejected(self) -> int:
        """Spans rejected so far (all of them once ``slices`` is exhausted)."""
        return sum(self._reasons.values())

    @property
    def message(self) -> str:
        """Why spans were rejected or values not stored as sent (``_validate.describe``), or ``""``."""
        return describe(self._reasons, self._notes)


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


def is_compressed(content_encoding: str | None) -> bool:
    """Whether a body sent with this ``Content-Encoding`` is decoded from a decompressed copy
    rather than as it is."""
    return (content_encoding or "").strip().lower() not in ("", "identity")


def _decompress(body: bytes, content_encoding: str | None, max_body: int,
                reserve: Callable[[int], None]) -> bytes | bytearray:
    if not is_compressed(content_encoding):
        if len(body) > max_body:
            raise _too_large(max_body)
        reserve(len(body))
        return body
    if (content_encoding or "").strip().lower() not in ("gzip", "x-gzip"):
        raise OtlpError(415, f"unsupported Content-Encoding {content_encoding!r}; send the body uncompressed "
                             "or with Content-Encoding: gzip")
    out = bytearray()  # grown in place: pieces and their join held the payload twice
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
        out += chunk
        if not inflater.eof:
            if not inflater.unconsumed_tail and len(chunk) < step:
                raise OtlpError(400, "truncated gzip body; send the complete gzip stream")
            data = inflater.unconsumed_tail  # the step is out; the member goes on
            continue
        data = inflater.unused_data
        if not data:  # concatenated members are one valid gzip body
            return out
        members += 1
        if members >= _GZIP_MEMBERS:
            raise OtlpError(400, f"gzip body of more than {_GZIP_MEMBERS} concatenated members; "
                                 "compress the request as one gzip stream")
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)


# --- protobuf ---------------------------------------------------------------------------------


def _protobuf_slices(data: bytes, decoded: Decoded) -> Iterator[list[SpanRecord | str]]:
    """The request's spans, to be mapped a slice of about ``decoded.slice_bytes`` at a time.

    The request's structure is walked whole first (``_fields``: each resource and scope, and where
    each span lies), so that a structure that is not protobuf fails the whole request before any
    span is mapped, as parsing it whole did. Then the spans of each slice are parsed at once,
    copied into a request of their own (``_parsed``) so that only a slice's messages are in
    memory: parsed whole, a request of one-byte attributes takes 8 bytes a byte.
    """
    contexts: list[tuple[dict[str, Any] | str, str]] = []  # (resource attributes or why rejected, scope name)
    spans: list[tuple[int, int, int]] = []  # (its context, where the span's field begins and ends)
    for number, wire, value, end, _ in _fields(data, 0, len(data)):
        if number != 1 or wire != 2:  # not resource_spans: unknown to this version of OTLP
            continue
        first = len(contexts)
        resource_fields, scope_names = [], []
        for number, wire, scope_value, scope_end, begin in _fields(data, value, end):
            if number != 2 or wire != 2:  # the resource, the schema URL
                resource_fields.append((begin, scope_end))
                continue
            scope_fields = []
            for number, wire, _, span_end, span_begin in _fields(data, scope_value, scope_end):
                if number == 2 and wire == 2:
                    spans.append((first + len(scope_names), span_begin, span_end))
                else:  # the scope, the schema URL
                    scope_fields.append((span_begin, span_end))
            scope_names.append(_parsed(data, scope_fields, 2).resource_spans[0].scope_spans[0].scope.name
                               if scope_fields else "")
        # One dict shared by the resource's spans, as from_readable shares it: the ingestor
        # serialises a resource once per object.
        attributes = _resource_attributes(_parsed(data, resource_fields, 1).resource_spans[0].resource)
        contexts += [(attributes, name) for name in scope_names]
    _check_spans(len(spans))
    return _protobuf_mapped(data, contexts, spans, decoded)


def _protobuf_mapped(data: bytes, contexts: list[tuple[dict[str, Any] | str, str]], spans: list[tuple[int, int, int]],
                     decoded: Decoded) -> Iterator[list[SpanRecord | str]]:
    # The first slice of a request of several is a quarter of one: a request dense in objects shows it at a
    # quarter of the cost (the collector then sizes the next), and a request of one slice stays one.
    limit = decoded.slice_bytes // 4 if len(data) > decoded.slice_bytes else decoded.slice_bytes
    start = size = 0
    for k, (_, begin, end) in enumerate(spans):
        size += end - begin
        if size >= limit or k == len(spans) - 1:
            decoded.sliced_bytes = size
            # Mapped by a call, so that no local holds the slice's protobuf messages (8 bytes a payload
            # byte for tiny attributes) while the writer commits what it yields.
            yield _mapped_slice(data, contexts, spans[start:k + 1])
            start, size, limit = k + 1, 0, decoded.slice_bytes


def _mapped_slice(data: bytes, contexts: list[tuple[dict[str, Any] | str, str]],
                  run: list[tuple[int, int, int]]) -> list[SpanRecord | str]:
    parsed = _parsed_spans(data, [(begin, end) for _, begin, end in run])
    return [_mapped(span, *contexts[context]) for span, (context, _, _) in zip(parsed, run)]


def _fields(data: bytes, pos: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
    """The fields of the message in ``data[pos:end]``: each one's number, wire type, where its value
    begins and ends, and where its tag begins.

    Raises:
        OtlpError: (400) the bytes are not protobuf.
    """
    while pos < end:
        begin = pos
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 2:
            length, pos = _varint(data, pos)
            value, pos = pos, pos + length
        else:
            value, pos = pos, _skip(data, pos, number, wire)
        if number == 0 or pos > end:
            raise _malformed_protobuf(f"{'field number 0' if number == 0 else 'truncated field'} at byte {begin}")
        yield number, wire, value, pos, begin


def _skip(data: bytes, pos: int, number: int, wire: int) -> int:
    """Where the value of a field that is not length-delimited ends."""
    if wire == 0:
        return _varint(data, pos)[1]
    if wire == 1:
        return pos + 8
    if wire == 5:
        return pos + 4
    if wire == 3:  # a group (proto2): its fields, up to the end-group tag of its number
        while pos < len(data):
            key, pos = _varint(data, pos)
            if key & 7 == 4:
                if key >> 3 != number:
                    break
                return pos
            if key & 7 == 2:
                length, pos = _varint(data, pos)
                pos += length
            else:
                pos = _skip(data, pos, key >> 3, key & 7)
    raise _malformed_protobuf(f"bad group or wire type {wire} of field {number}")


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while pos < len(data) and shift < 64:
        byte = data[pos]
        result |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return result, pos
        shift += 7
    raise _malformed_protobuf(f"truncated or overlong varint at byte {pos}")


def _malformed_protobuf(what: str) -> OtlpError:
    return OtlpError(400, f"malformed protobuf ({what}); send a serialized ExportTraceServiceRequest "
                          "(opentelemetry.proto.collector.trace.v1)")


def _parsed(data: bytes, fields: list[tuple[int, int]], depth: int) -> ExportTraceServiceRequest:
    """The ``fields`` of ``data`` (tag and value) as those of a ``ResourceSpans`` (``depth`` 1) or a
    ``ScopeSpans`` (2) in a request of their own: at the depth they have in the request, so that
    the decoder's nesting limit falls where it falls on the whole request.

    Raises:
        OtlpError: (400) they are not valid protobuf (``_parsed_spans`` then rejects spans one by one).
    """
    view = memoryview(data)
    parts = [view[begin:end] for begin, end in fields]
    length = sum(end - begin for begin, end in fields)
    for number in (2, 1)[2 - depth:]:  # scope_spans in a ResourceSpans, then resource_spans in the request
        header = bytes(_tag(number, length))
        parts.insert(0, header)
        length += len(header)
    try:
        return ExportTraceServiceRequest.FromString(b"".join(parts))
    except (DecodeError, RecursionError) as exc:
        raise _malformed_protobuf(str(exc)) from None


def _tag(number: int, length: int) -> bytearray:
    """The tag and length of a length-delimited field."""
    out = bytearray()
    for value in ((number << 3) | 2, length):
        while value >= 0x80:
            out.append((value & 0x7F) | 0x80)
            value >>= 7
        out.append(value)
    return out


def _parsed_spans(data: bytes, fields: list[tuple[int, int]]) -> list[Span | str]:
    """The spans at ``fields`` of ``data``, parsed at once; when that fails, one by one, and a span
    that does not parse is rejected alone (as over OTLP/JSON) rather than its whole request."""
    try:
        return list(_parsed(data, fields, 2).resource_spans[0].scope_spans[0].spans)
    except OtlpError:
        if len(fields) == 1:
            return ["malformed span (not valid protobuf: a string not UTF-8, a field cut short, or values nested "
                    "too deeply)"]
    return [span for field in fields for span in _parsed_spans(data, [field])]


def _resource_attributes(resource: Resource) -> dict[str, Any] | str:
    """A resource's attributes, or why its spans are rejected."""
    try:
        return _attributes(resource.attributes)
    except _Rejected as exc:
        return f"resource {exc}"


def _mapped(span: Span | str, resource: dict[str, Any] | str, scope: str) -> SpanRecord | str:
    """``_record``, or why the span is rejected (a span given as a string was already)."""
    if isinstance(span, str):
        return span
    if isinstance(resource, str):
        return resource
    try:
        return _record(span, resource, scope)
    except _Rejected as exc:
        return str(exc)


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


def _json_slices(data: bytes, slice_bytes: int) -> Iterator[list[SpanRecord | str]]:
    """The request's spans, to be mapped a slice at a time: of as many spans as average ``slice_bytes``.
    The body is parsed and its structure checked whole, now."""
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
    count = sum(len(_json_list(scope_spans, "spans", "spans")) for resource_spans in resource_list
                for scope_spans in _json_list(resource_spans, "scopeSpans", "scope_spans"))
    _check_spans(count)
    for resource_spans in resource_list:
        scope_list = _json_list(resource_spans, "scopeSpans", "scope_spans")
        resource = _json_message(resource_spans, "resource", Resource())
        scopes = []
        for scope_spans in scope_list:
            span_list = _json_list(scope_spans, "spans", "spans")
            scope = _json_message(scope_spans, "scope", InstrumentationScope())
            scopes.append((scope.name, [_json_span(span) for span in span_list]))
        resources.append((resource, scopes))
    items = (_mapped(span, attributes, name) for resource, scopes in resources
             for attributes in [_resource_attributes(resource)] for name, spans in scopes for span in spans)
    per_slice = max(1, count * slice_bytes // max(len(data), 1))
    return iter(lambda: list(itertools.islice(items, per_slice)), [])


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
        raise _malformed_json(f"bad {key} ({clip_text(str(exc), 120)})") from None


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
        return f"malformed span: {clip_text(str(exc), 120)}"
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
