"""Redactors and the content policy: what of a string reaches the store or an OTLP export.

A redactor is any callable ``str -> str``. The built-in ones replace what they find with a
marker such as ``[REDACTED:email]``, so that a reader of the trace still sees that something
was there and what kind of thing it was.

``ContentPolicy`` is the one place a content mode is applied. Capture asks it for every piece of
content it puts on a span (``content``: request and response bodies, tool arguments, results and
errors, reasoning, status descriptions) and for every piece of metadata an agent can fill with
free text (``metadata``: session and event attributes). The exporters pass every finished span
through ``span`` before it is stored or sent, which catches what other code put on spans of the
recorder's provider: exception events from ``record_exception``, status descriptions, other
instrumentation's attributes. ``flightrec serve`` passes the spans it receives from other processes
through ``records``, by the same rules, before it stores them.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import Status

from . import _attributes as A
from . import _foreign
from ._canonical import canonical_json, loads
from ._ingest import SpanRecord

Redactor = Callable[[str], str]
"""Takes a piece of text and returns it with sensitive parts replaced."""

ContentMode = Literal["full", "redacted", "none"]
"""``full`` keeps content as it is, ``redacted`` runs the redactors over it, ``none`` keeps metadata only."""

_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
# Phone numbers: an optional +country code, then 9 to 15 digits in groups. Dates and order
# numbers are shorter or unseparated, which keeps false positives down. Neither a phone nor a card
# number starts or ends inside a word or a dashed id, so that the digit runs of UUIDs and hex
# hashes in ids stay whole.
_PHONE = re.compile(r"(?<![\w+-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?)?\d{1,4}(?:[ .-]\d{2,4}){1,5}(?![\w-])")
_CARD = re.compile(r"(?<![\w-])(?:\d[ -]?){12,18}\d(?![\w-])")
_API_KEY = re.compile(
    r"\b(?:sk-ant-[A-Za-z0-9_-]{10,}|sk-[A-Za-z0-9_-]{20,}|(?:sk|rk)_live_[A-Za-z0-9]{16,}"
    # AWS access key ids (long-term AKIA, temporary ASIA, and the rarer prefixes).
    r"|(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[0-9A-Z]{16}"
    # GitHub: classic tokens and fine-grained personal access tokens.
    r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,}"
    # Slack tokens; Google API keys and OAuth access tokens.
    r"|xox[abposre]-[A-Za-z0-9-]{10,}|xapp-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}|ya29\.[0-9A-Za-z_-]{20,})"
)
# Secrets with no shape of their own, recognised by the name they are given: an AWS secret access
# key, and a Slack webhook's path. A PEM private key block (a GCP service account's key) by its armour.
_NAMED_SECRET = re.compile(
    r"(?i)(aws_?secret_?(?:access_?)?key[\"']?\s*[:=]\s*[\"']?)[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])"
)
_SLACK_WEBHOOK = re.compile(r"https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_-]+")
_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", re.S)
# A JWT is three base64url parts; its header always starts with `{"`, which is `eyJ` in base64.
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
# The credential must hold a digit: "basic questions" is English, "Basic dXNlcjpwYXNz0=" is not.
_BEARER = re.compile(r"\b([Bb](?i:earer|asic))(\s+)(?=[A-Za-z0-9._~+/-]*\d)[A-Za-z0-9._~+/-]{8,}=*")
# Two capital letters, two check digits, then up to 30 capitals and digits, printed with or without
# spaces every four. The mod-97 check in `redact_iban` keeps words and codes that look alike.
_IBAN = re.compile(r"(?<![\w-])[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
# The look-behind comes after the first digit: a pattern that starts with a character class is
# scanned for that class first, several times faster than testing a look-behind at every position.
_SSN = re.compile(r"\d(?<![\d-]\d)(?<!0\d)(?<!6\d)(?<!9\d)\d\d(?<!000)(?<!666)([- ])(?!00)\d{2}\1(?!0000)\d{4}"
                  r"(?![\d-])")
_SSN_NAMED = re.compile(r"(?i)\b(ssn|social security(?: number| no\.?)?)(\W{1,3})\d{9}\b")
# An address ends a sentence with a period, but is not part of a longer dotted number or a word (v1.2.3.4).
_IPV4 = re.compile(r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
                   r"(?!\w|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?:%\w+)?"
                   r"(?![\w:])")


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _iban_ok(text: str) -> bool:
    s = text.replace(" ", "")
    if not 15 <= len(s) <= 34:
        return False
    rearranged = s[4:] + s[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def redact_email(text: str) -> str:
    """Replaces e-mail addresses."""
    return _EMAIL.sub("[REDACTED:email]", text)


def redact_phone(text: str) -> str:
    """Replaces phone numbers written with separators or a country code."""

    def sub(m: re.Match[str]) -> str:
        found = m.group()
        digits = re.sub(r"\D", "", found)
        # A one-digit first group (+33 6 12 34 56 78) only after a country code: "5 10 15 …" is a list.
        lone_first = found[0].isdigit() and not found[1].isdigit()
        return "[REDACTED:phone]" if 9 <= len(digits) <= 15 and not lone_first else found

    return _PHONE.sub(sub, text)


def redact_card(text: str) -> str:
    """Replaces payment card numbers (13 to 19 digits that pass the Luhn check)."""

    def sub(m: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", m.group())
        return "[REDACTED:card]" if _luhn_ok(digits) else m.group()

    return _CARD.sub(sub, text)


def redact_api_key(text: str) -> str:
    """Replaces API keys and tokens of well-known shapes.

    Anthropic, OpenAI, Stripe, AWS (access key ids, and secret keys given by name), GitHub, Slack
    (tokens and webhook URLs), Google (API keys, OAuth tokens, PEM private keys of service accounts).
    """
    text = _API_KEY.sub("[REDACTED:api_key]", text)
    text = _NAMED_SECRET.sub(r"\1[REDACTED:api_key]", text)
    text = _SLACK_WEBHOOK.sub("[REDACTED:api_key]", text)
    return _PRIVATE_KEY.sub("[REDACTED:private_key]", text)


def redact_jwt(text: str) -> str:
    """Replaces JSON Web Tokens (signed or not)."""
    return _JWT.sub("[REDACTED:jwt]", text)


def redact_bearer(text: str) -> str:
    """Replaces the credential after ``Bearer`` or ``Basic`` (an Authorization header's value)."""
    return _BEARER.sub(r"\1\2[REDACTED:token]", text)


def redact_iban(text: str) -> str:
    """Replaces IBANs that pass the mod-97 check, with or without spaces.

    A match that runs into the next word (``… 0130 00 EUR``) is cut back group by group until it checks.
    """

    def sub(m: re.Match[str]) -> str:
        found = m.group()
        for end in range(len(found), 14, -1):
            if (end == len(found) or found[end] == " ") and _iban_ok(found[:end]):
                return "[REDACTED:iban]" + found[end:]
        return found

    return _IBAN.sub(sub, text)


def redact_ssn(text: str) -> str:
    """Replaces US social security numbers: ``123-45-6789``, ``123 45 6789``, and nine digits named as one."""
    text = _SSN.sub("[REDACTED:ssn]", text)
    return _SSN_NAMED.sub(r"\1\2[REDACTED:ssn]", text)


def redact_ip(text: str) -> str:
    """Replaces IPv4 and IPv6 addresses."""

    def sub6(m: re.Match[str]) -> str:
        found = m.group()
        try:
            ipaddress.IPv6Address(found.split("%", 1)[0])
        except ValueError:
            return found
        return "[REDACTED:ip]" if found.strip(":") else found

    return _IPV4.sub("[REDACTED:ip]", _IPV6.sub(sub6, text))


# Order matters: keys and tokens first (they hold digit runs that look like cards and phones), IBANs
# and SSNs before cards and phones (an SSN is a phone number's shape too), addresses before phones
# (192.168.100.200 has a phone number's digits), cards before phones (a card looks like a long phone).
BUILTIN_REDACTORS: tuple[Redactor, ...] = (
    redact_api_key, redact_jwt, redact_bearer, redact_email, redact_iban, redact_ssn, redact_ip, redact_card,
    redact_phone,
)


def redact_value(value: Any, redactors: Iterable[Redactor]) -> Any:
    """A copy of a JSON value with every string run through every redactor. Keys are kept."""
    return ContentPolicy("redacted", tuple(redactors)).content(value)


def _walk(value: Any, redact: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, (list, tuple)):
        return [_walk(x, redact) for x in value]
    if isinstance(value, dict):
        return {k: _walk(x, redact) for k, x in value.items()}
    return value


# Attributes of flightrec's own spans that hold identifiers, hashes and settings, never free text:
# the span pass leaves them be, so that an id that happens to look like a phone number stays joinable.
_IDENTIFIERS = frozenset({
    A.CONVERSATION_ID, A.REQUEST_SHA256, A.TOOL_CALL_ID, A.RESPONSE_ID, A.SERVER_ADDRESS, A.CONTENT_MODE,
})
# What an exception event may keep in `none` mode: its type, not its message or stack.
_EXCEPTION_TYPE = "exception.type"
_CACHED_STRINGS = 4096
# What capture shapes as it sets it on flightrec's spans, so that the span pass need not parse it again.
_SHAPED_AT_CAPTURE = A.CONTENT_ATTRIBUTES | {A.SESSION_STATUS_REASON}
_NO_ATTRIBUTES: Mapping[str, Any] = {}
_STRICTNESS: dict[str, int] = {"full": 0, "redacted": 1, "none": 2}


@dataclass(frozen=True)
class ContentPolicy:
    """A content mode and its redactors, applied to everything that leaves the agent in a span."""

    mode: ContentMode = "full"
    redactors: tuple[Redactor, ...] = BUILTIN_REDACTORS
    _redact: Callable[[str], str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Each call's request repeats the whole conversation so far: remembering the strings already
        # redacted keeps redaction linear in a session's length, not quadratic.
        chain = self.redactors

        def redact(text: str) -> str:
            for r in chain:
                text = r(text)
            return text

        object.__setattr__(self, "_redact", functools.lru_cache(maxsize=_CACHED_STRINGS)(redact))

    def content(self, value: Any) -> Any:
        """Content (bodies, tool arguments and results, messages): as it is, redacted, or ``None`` to leave out."""
        if self.mode == "full" or value is None:
            return value
        if self.mode == "none":
            return None
        return _walk(value, self._redact)

    def metadata(self, value: Any) -> Any:
        """Free text an agent puts in metadata (session and event attributes): redacted unless the mode is full.

        Metadata stays in ``none`` mode (it is what that mode keeps), so it is redacted there too.
        """
        if self.mode == "full" or value is None:
            return value
        return _walk(value, self._redact)

    def text(self, value: str) -> str:
        """A string attribute whose value may be JSON: redacted as JSON, so that the result still parses."""
        if value[:1] in ("{", "["):
            try:
                parsed = loads(value)
            except ValueError:
                pass
            else:
                return canonical_json(_walk(parsed, self._redact))
        return self._redact(value)

    def span(self, span: ReadableSpan) -> ReadableSpan:
        """The span as it may be stored or exported: a copy when anything in it had to change.

        The status description and every event (exception messages and stack traces included)
        are treated as content. Attributes: content attributes are left out in ``none`` mode and
        every other string is redacted, except those of flightrec's spans that capture shaped as it
        set them (bodies, tool arguments and results, reasoning, the status reason): other code can
        set attributes on flightrec's spans too, as the current span.
        """
        if self.mode == "full":
            return span
        own = span.instrumentation_scope is not None and span.instrumentation_scope.name == "flightrec"
        given = [e.attributes or _NO_ATTRIBUTES for e in span.events]
        attrs = span.attributes or _NO_ATTRIBUTES
        description, shaped_events, shaped = self._shape(
            span.status.description, [e.name for e in span.events], given, attrs,
            _SHAPED_AT_CAPTURE if own else frozenset())
        changed = description != span.status.description or shaped is not attrs
        events = []
        for event, before, after in zip(span.events, given, shaped_events):
            if after is not before:
                event, changed = Event(event.name, after, event.timestamp), True
            events.append(event)
        if not changed:
            return span
        status = Status(span.status.status_code, description) if description != span.status.description \
            else span.status
        return ReadableSpan(
            name=span.name, context=span.context, parent=span.parent, resource=span.resource, attributes=shaped,
            events=events, links=span.links, kind=span.kind, status=status, start_time=span.start_time,
            end_time=span.end_time, instrumentation_scope=span.instrumentation_scope)

    def records(self, records: Iterable[SpanRecord]) -> None:
        """Shapes spans received from other processes (``flightrec serve``), in place, before they are stored.

        The rules of ``span``, with two differences. No attribute is taken as shaped already, not even
        on flightrec's spans: the sender's own content mode may be fuller than this one. The resource's
        strings are redacted as metadata (kept in ``none`` mode): a sender's resource is free text this
        process did not choose (``process.command_line``, host names and addresses). A span that says
        which content mode captured it (``flightrec.content.mode``) then names the stricter of the two.
        """
        if self.mode == "full":
            return
        # A resource is shared by its spans: shaped once, and still shared (ingest serialises it once). Keyed
        # by identity, the original held so that its id stays unique.
        resources: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
        for r in records:
            events = [e.get("attributes") or _NO_ATTRIBUTES for e in r.events]
            r.status_message, shaped_events, attrs = self._shape(
                r.status_message, [e.get("name") for e in r.events], events, r.attributes, frozenset())
            for event, before, after in zip(r.events, events, shaped_events):
                if after is not before:
                    event["attributes"] = dict(after)
            if attrs is not r.attributes:
                r.attributes = dict(attrs)
            sent = r.attributes.get(A.CONTENT_MODE)
            if sent is not None and _STRICTNESS.get(sent, -1) < _STRICTNESS[self.mode]:
                r.attributes[A.CONTENT_MODE] = self.mode
            held = resources.get(id(r.resource))
            if held is None:
                held = resources[id(r.resource)] = (r.resource, dict(self._attributes(r.resource)))
            r.resource = held[1]

    def _shape(self, description: str | None, names: list[str | None], events: list[Mapping[str, Any]],
               attrs: Mapping[str, Any], skip: frozenset[str]
               ) -> tuple[str | None, list[Mapping[str, Any]], Mapping[str, Any]]:
        """The rules for one span, whatever its shape: its status description, its events' attributes
        (``names`` are the events' names) and its attributes, each the very object given when unchanged."""
        if description:
            description = self._free_text(description)
        shaped_events = [self._attributes(a, exception=name == "exception") for name, a in zip(names, events)]
        return description, shaped_events, self._attributes(attrs, skip=skip)

    def _free_text(self, value: str) -> str | None:
        return None if self.mode == "none" else self.text(value)

    def _attributes(self, attrs: Mapping[str, Any], *, exception: bool = False,
                    skip: frozenset[str] = frozenset()) -> Mapping[str, Any]:
        """``attrs`` itself when nothing changes, else a shaped copy; ``skip`` names keys kept as they are."""
        out: dict[str, Any] = {}
        changed = False
        for key, value in attrs.items():
            if key in _IDENTIFIERS or key in skip:
                out[key] = value
                continue
            is_content = (exception and key != _EXCEPTION_TYPE or key in A.CONTENT_ATTRIBUTES
                          or _foreign.is_content(key))
            if is_content and self.mode == "none":
                changed = True
                continue
            if isinstance(value, str):
                shaped: Any = self.text(value)
            elif isinstance(value, (list, tuple)):
                shaped = tuple(self.text(v) if isinstance(v, str) else v for v in value)
            else:
                shaped = value
            changed = changed or shaped != value
            out[key] = shaped
        return out if changed else attrs
