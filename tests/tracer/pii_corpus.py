"""A corpus of secrets and personal data, many formats of each kind, for the redaction tests.

Each entry is ``(text, needle)``: ``text`` is how the secret appears in what an agent handles, and
``needle`` is the part that must never reach the store (for a credential given by name, the value,
not the name). Every value is made up; the cards, IBANs and keys are the documented test values or
random, and pass the checksums their kind has.
"""

from __future__ import annotations

_AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
_PEM_BODY = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7VJTUt9Us8cKj"

CORPUS: dict[str, list[tuple[str, str]]] = {
    "email": [(s, s) for s in ("jane.doe+shop@example.co.uk", "BOB_SMITH@Mail.Example.ORG", "x.y-z@sub.domain.io")],
    "phone": [(s, s) for s in ("+44 20 7946 0958", "(415) 555-0134", "+1-202-555-0187", "030 1234 5678",
                               "+33 6 12 34 56 78")],
    "card": [(s, s) for s in ("4111 1111 1111 1111", "5500-0000-0000-0004", "378282246310005", "6011000990139424")],
    "api_key": [
        *[(s, s) for s in (
            "sk-ant-api03-Zq8rT5vW2xY7uK1mN4pL9hJ3", "sk-proj-AbCdEfGhIjKlMnOpQrStUvWx12", "AKIAIOSFODNN7EXAMPLE",
            "ASIAY34FZKBOKMUTVV7A", "ghp_R2d2C3poR2d2C3poR2d2C3poR2d2C3po1234",
            "gho_16C7e42F292c6912E7710c838347Ae178B4a",
            "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCD",
            "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx", "xapp-1-A0123456789-0123456789012-abcdef0123",
            "AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW", "ya29.a0AfH6SMBx1234567890abcdefghijKLMN",
            "https://hooks.slack.com/services/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")],
        (f"aws_secret_access_key = {_AWS_SECRET}", _AWS_SECRET),
        (f"-----BEGIN PRIVATE KEY-----\n{_PEM_BODY}\nqKYP5rJ8w2zL\n-----END PRIVATE KEY-----", _PEM_BODY),
    ],
    "jwt": [(s, s) for s in (
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkphbmUifQ."
        "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
        "eyJhbGciOiJub25lIn0.eyJ1c2VyIjoiYm9iQGV4YW1wbGUuY29tIn0.")],
    "bearer": [("Authorization: Bearer 9f8e7d6c5b4a39281706f5e4d3c2b1a0", "9f8e7d6c5b4a39281706f5e4d3c2b1a0"),
               ("authorization: bearer abc123.def456-ghi789~xyz", "abc123.def456-ghi789~xyz"),
               ("Basic dXNlcjpwYXNzd29yZDEyMw==", "dXNlcjpwYXNzd29yZDEyMw")],
    "iban": [(s, s) for s in ("DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432", "FR1420041010050500013M02606",
                              "NL91 ABNA 0417 1643 00")],
    "ssn": [("078-05-1120", "078-05-1120"), ("219 09 9999", "219 09 9999"), ("SSN: 536224871", "536224871")],
    "ip": [(s, s) for s in ("203.0.113.195", "192.168.10.254", "2001:db8:85a3::8a2e:370:7334",
                            "fe80::1ff:fe23:4567:890a", "2001:0db8:0000:0000:0000:ff00:0042:8329")],
}

TEXT = "Customer file. " + " | ".join(f"{kind}: {text}" for kind, entries in CORPUS.items() for text, _ in entries)
"""Every secret in one piece of prose, as a customer message or a tool result would hold them."""

NEEDLES = [needle for entries in CORPUS.values() for _, needle in entries]
"""What must not be found in a store recorded with redaction."""


def found(haystack: str | bytes) -> list[str]:
    """The needles in ``haystack``."""
    if isinstance(haystack, bytes):
        return [n for n in NEEDLES if n.encode() in haystack]
    return [n for n in NEEDLES if n in haystack]
