"""The string forms of the CloudEvents 1.0.2 type system, as a receiver checks them: attribute
names, `URI` and `URI-reference` (RFC 3986), `Timestamp` (RFC 3339), media types (RFC 2046,
for `datacontenttype`), the `Integer` range, and an HTTP header value's decoding (RFC 7230
quoted-string, then one round of percent-decoding). Pure functions: each answers what is wrong
with a value, as a phrase to follow its name, or None when it is right."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import unquote

INTEGER_MIN, INTEGER_MAX = -(2**31), 2**31 - 1
NAME = re.compile(r"[a-z0-9]{1,20}")
MAX_CHARS = 1024  # admit's own limit on a String attribute value
_NONCHARACTERS = "".join(chr(p * 0x10000 + 0xFFFE) + chr(p * 0x10000 + 0xFFFF)
                         for p in range(17))
_NOT_IN_STRINGS = re.compile(f"[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef"
                             f"{_NONCHARACTERS}]")

# RFC 3986, appendix A, over ASCII only (an IRI is no URI: its other characters are
# percent-encoded). `re.ASCII` keeps \d and friends from matching other scripts' digits.
_PCT = r"%[0-9A-Fa-f]{2}"
_UNRESERVED = r"A-Za-z0-9\-._~"
_SUB_DELIMS = r"!$&'()*+,;="
_PCHAR = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}:@]|{_PCT})"
_SEGMENT = rf"{_PCHAR}*"
_SEGMENT_NZ = rf"{_PCHAR}+"
_SEGMENT_NZ_NC = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}@]|{_PCT})+"
_AUTHORITY = (rf"(?:(?:[{_UNRESERVED}{_SUB_DELIMS}:]|{_PCT})*@)?"
              rf"(?P<host>\[[^\[\]/?#@]*\]|(?:[{_UNRESERVED}{_SUB_DELIMS}]|{_PCT})*)"
              r"(?::[0-9]*)?")
_PATH_ABEMPTY = rf"(?:/{_SEGMENT})*"
_PATH_ABSOLUTE = rf"/(?:{_SEGMENT_NZ}(?:/{_SEGMENT})*)?"
_PATH_ROOTLESS = rf"{_SEGMENT_NZ}(?:/{_SEGMENT})*"
_PATH_NOSCHEME = rf"{_SEGMENT_NZ_NC}(?:/{_SEGMENT})*"
_QUERY = rf"(?:{_PCHAR}|[/?])*"
_TAIL = rf"(?:\?{_QUERY})?(?:#{_QUERY})?"
_URI = re.compile(rf"[A-Za-z][A-Za-z0-9+\-.]*:(?://{_AUTHORITY}{_PATH_ABEMPTY}"
                  rf"|{_PATH_ABSOLUTE}|{_PATH_ROOTLESS}|){_TAIL}", re.ASCII)
_RELATIVE_REF = re.compile(rf"(?://{_AUTHORITY}{_PATH_ABEMPTY}|{_PATH_ABSOLUTE}"
                           rf"|{_PATH_NOSCHEME}|){_TAIL}", re.ASCII)
_IP_FUTURE = re.compile(rf"v[0-9A-Fa-f]+\.[{_UNRESERVED}{_SUB_DELIMS}:]+", re.ASCII)

# RFC 3339, section 5.6: `T` and `Z` may be lower case; nothing else of ISO 8601 (no basic
# format, no week or ordinal dates, no offset without its colon, no space for `T`).
_TIMESTAMP = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})"
                        r"(?:\.[0-9]+)?(?:[Zz]|[+-]([0-9]{2}):([0-9]{2}))", re.ASCII)

# RFC 2045 section 5.1 (which RFC 2046 uses): type "/" subtype *(";" parameter).
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[\t \x21\x23-\x5b\x5d-\x7e]|\\[\t \x21-\x7e])*"'
_MEDIA_TYPE = re.compile(rf"{_TOKEN}/{_TOKEN}(?:[ \t]*;[ \t]*{_TOKEN}=(?:{_TOKEN}|{_QUOTED}))*"
                         r"[ \t]*", re.ASCII)
_QUOTED_STRING = re.compile(_QUOTED, re.ASCII)
_QUOTED_PAIR = re.compile(r"\\(.)", re.S)
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def string_error(value: str) -> str | None:
    """A String holds no control characters, lone surrogates or noncharacters (spec.md, type
    system), and at most `MAX_CHARS` characters."""
    if len(value) > MAX_CHARS:
        return f"has {len(value)} characters; the limit is {MAX_CHARS}"
    found = _NOT_IN_STRINGS.search(value)
    if found is None:
        return None
    return (f"contains U+{ord(found.group()):04X} at character {found.start()}; CloudEvents "
            "attribute values may not hold control characters, lone surrogates or "
            "noncharacters")


def name_error(name: str) -> str | None:
    """CloudEvents attribute names are 1 to 20 of a-z and 0-9 (spec.md, naming convention)."""
    if NAME.fullmatch(name):
        return None
    return ("is not a CloudEvents attribute name (1 to 20 lower-case letters a-z and digits "
            "0-9)")


def uri_reference_error(value: str) -> str | None:
    """`source` is a non-empty URI-reference (RFC 3986, section 4.1)."""
    if _uri(value, _URI) or _uri(value, _RELATIVE_REF):
        return None
    return "is not a URI-reference (RFC 3986): percent-encode spaces and other characters"


def uri_error(value: str) -> str | None:
    """`dataschema` is an absolute URI (RFC 3986, section 4.3: it has a scheme). A fragment is
    allowed, as the spec's own JSON schema (`format: uri`) allows it."""
    if _uri(value, _URI):
        return None
    if _uri(value, _RELATIVE_REF):
        return "is a relative reference; it must be an absolute URI with a scheme"
    return "is not a URI (RFC 3986)"


def _uri(value: str, form: re.Pattern[str]) -> bool:
    found = form.fullmatch(value)
    if found is None:
        return False
    host = found.groupdict().get("host") or ""
    if not host.startswith("["):
        return True
    literal = host[1:-1]
    if _IP_FUTURE.fullmatch(literal):
        return True
    try:
        ipaddress.IPv6Address(literal)
    except ValueError:
        return False
    return "%" not in literal  # a zone id is no part of an RFC 3986 IP-literal


def timestamp_error(value: str) -> str | None:
    """`time` follows RFC 3339 (section 5.6, date-time), with each field in its range."""
    found = _TIMESTAMP.fullmatch(value)
    if found is None:
        return "is not an RFC 3339 timestamp such as 2018-04-05T17:31:00Z or ...+05:30"
    year, month, day, hour, minute, second = (int(found[i]) for i in range(1, 7))
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    days = (31, 29 if leap else 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
    offset = (int(found[7]), int(found[8])) if found[7] is not None else (0, 0)
    if not (1 <= month <= 12 and 1 <= day <= days[month - 1] and hour <= 23 and minute <= 59
            and second <= 60 and offset[0] <= 23 and offset[1] <= 59):
        return "is not a valid RFC 3339 timestamp: a field is out of its range"
    return None


def media_type_error(value: str) -> str | None:
    """`datacontenttype` is a media type (RFC 2046): type/subtype, then parameters."""
    if _MEDIA_TYPE.fullmatch(value):
        return None
    return "is not a media type (RFC 2046) such as application/json"


def media_type(content_type: str) -> str:
    """The media type of a Content-Type value, lower case and without its parameters: media
    types compare case-insensitively, and a charset changes nothing for JSON (RFC 8259)."""
    return content_type.split(";", 1)[0].strip(" \t").lower()


def integer_error(value: object) -> str | None:
    """An `Integer` attribute value in JSON: an integer number in the signed 32-bit range."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float):
        return "is a fraction or exponent; an Integer attribute value is a whole number"
    if isinstance(value, int) and not INTEGER_MIN <= value <= INTEGER_MAX:
        return f"is out of the Integer range {INTEGER_MIN} to {INTEGER_MAX}"
    return None


def header_value(raw: str) -> tuple[str | None, str | None]:
    """A `ce-*` header value decoded as the HTTP binding says (3.1.3.2): unescaped first when
    it is an RFC 7230 quoted-string, then percent-decoded once as UTF-8. `(value, None)`, or
    `(None, what is wrong)`."""
    text = raw.strip(" \t")
    if not text.isascii():
        return None, "must be ASCII; percent-encode other characters as UTF-8"
    if text.startswith('"'):
        if _QUOTED_STRING.fullmatch(text) is None:
            return None, "is not a well-formed quoted string (RFC 7230, section 3.2.6)"
        text = _QUOTED_PAIR.sub(r"\1", text[1:-1])
    if _BAD_PERCENT.search(text):
        return None, "has a '%' not followed by two hex digits; send '%' as %25"
    try:
        return unquote(text, errors="strict"), None
    except UnicodeDecodeError:
        return None, "is not percent-encoded UTF-8"
