"""The words and bytes of an offer, without any server: coupon codes, the owner's reason and message from a
template's text, the e-mail as it is sent, and the signature of a webhook body.

A template's text may name only these placeholders, filled with plain words: {name}, {appliance}, {age},
{value}, {expires}, {code}, {reason}, {reason_lower}. Nothing else about the customer reaches a message, so a
message never shows more than its reason needs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import string
import zoneinfo
from decimal import Decimal
from email.message import EmailMessage
from email.utils import format_datetime
from urllib.parse import parse_qsl, urlsplit, urlunsplit

PLACEHOLDERS = frozenset({"name", "appliance", "age", "value", "expires", "code", "reason", "reason_lower"})
CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford's base 32: no I, L, O, U to misread
CODE_GROUPS, CODE_GROUP_LENGTH = 4, 4  # 16 symbols: 80 random bits
CURRENCY = "CNY"
NUMBER_WORDS = ["no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"]


def check_placeholders(text: str) -> None:
    """ValueError naming any placeholder that is not one of PLACEHOLDERS, or one with a format or attribute."""
    for _literal, field, spec, conversion in string.Formatter().parse(text):
        if field is None:
            continue
        if field not in PLACEHOLDERS or spec or conversion:
            raise ValueError(f"unknown placeholder {{{field}}}: use {', '.join(sorted(PLACEHOLDERS))}")


def coupon_code() -> str:
    """A fresh, unguessable coupon code such as `7K2M-QX9D-4HTR-WB3C`."""
    symbols = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_GROUPS * CODE_GROUP_LENGTH))
    return "-".join(symbols[i:i + CODE_GROUP_LENGTH] for i in range(0, len(symbols), CODE_GROUP_LENGTH))


def normalise_code(code: str) -> str:
    """A code as a person may type it (lower case, spaces, O for 0) in the form it is stored."""
    cleaned = code.strip().upper().replace(" ", "").replace("-", "")
    cleaned = cleaned.translate(str.maketrans({"O": "0", "I": "1", "L": "1"}))
    if len(cleaned) != CODE_GROUPS * CODE_GROUP_LENGTH:
        return code.strip()
    return "-".join(cleaned[i:i + CODE_GROUP_LENGTH] for i in range(0, len(cleaned), CODE_GROUP_LENGTH))


def number_words(n: int) -> str:
    return NUMBER_WORDS[n] if 0 <= n < len(NUMBER_WORDS) else str(n)


def age_words(purchased_on: dt.date | None, today: dt.date) -> str:
    """How long the owner has had the appliance, as they would say it: "five years", "a year", "a few months"."""
    if purchased_on is None:
        return "a good many years"
    years = today.year - purchased_on.year - ((today.month, today.day) < (purchased_on.month, purchased_on.day))
    if years >= 2:
        return f"{number_words(years)} years"
    if years == 1:
        return "a year"
    return "a few months"


def value_words(value_kind: str, value: Decimal) -> str:
    if value_kind == "percent":
        return f"{value.normalize():f}%"
    return f"{CURRENCY} {value.quantize(Decimal(1)) if value == value.to_integral() else value:f}"


def local_date_words(moment: dt.datetime, timezone: str) -> str:
    return f"{moment.astimezone(zoneinfo.ZoneInfo(timezone)):%d %B %Y}".lstrip("0")


def render(text: str, values: dict[str, str]) -> str:
    """A template's text with its placeholders filled (checked when the template was stored)."""
    return text.format_map({name: values.get(name, "") for name in PLACEHOLDERS})


def owner_words(
    *, reason: str, name: str, appliance: str | None, age: str, value: str, expires: str, code: str
) -> dict[str, str]:
    """The placeholder values of one offer; the reason is rendered first, so the message can quote it."""
    values = {"name": name, "appliance": appliance or "appliance", "age": age, "value": value,
              "expires": expires, "code": code}
    said = render(reason, values).strip().rstrip(".")
    values["reason"] = said[:1].upper() + said[1:]
    values["reason_lower"] = said[:1].lower() + said[1:]
    return values


def email_message(
    *, message_id: str, sent_from: str, to: str, subject: str, text: str, date: dt.datetime,
    unsubscribe_url: str | None = None,
) -> str:
    """The whole e-mail as it goes over SMTP, rendered once: a retry sends these very bytes. With an unsubscribe
    link, mail clients offer it too (List-Unsubscribe, one click: RFC 8058)."""
    mail = EmailMessage()
    mail["Message-ID"] = message_id
    mail["Date"] = format_datetime(date.astimezone(dt.UTC))
    mail["From"] = sent_from
    mail["To"] = to
    mail["Subject"] = subject
    stop = "Reply STOP, or tell our hotline, and we will not write again."
    if unsubscribe_url is not None:
        mail["List-Unsubscribe"] = f"<{unsubscribe_url}>"
        mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        stop = f"To receive no more offers from us, on any channel: {unsubscribe_url}"
    mail.set_content(
        f"{text}\n\n--\nYou receive this because you agreed to hear from CareLoop by e-mail. {stop}\n"
    )
    return mail.as_string()


def signature(secret: str, timestamp: int, body: str) -> str:
    """`t=<timestamp>,v1=<hex HMAC-SHA256 of "<timestamp>.<body>">`, as the receiver checks it."""
    digest = hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(secret: str, header: str, body: str) -> bool:
    """What a receiver does with X-CareLoop-Signature (here for tests and receivers written in Python)."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        expected = signature(secret, int(parts["t"]), body)
    except (KeyError, ValueError):
        return False
    return hmac.compare_digest(expected, header)


MASK = "***"


def masked_url(url: str) -> str:
    """A URL as lists show it: no password, no query value, no path segment that looks like a key (long, or with
    digits and letters mixed), since receivers often take their credentials there (`/services/T0/B0/<key>`)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        netloc = host + (f":{parts.port}" if parts.port else "")
    except ValueError:  # a port that is no number: nothing of it is worth showing
        netloc = host
    if parts.username or parts.password:
        netloc = f"{MASK}@{netloc}"
    path = "/".join(MASK if _looks_like_a_key(segment) else segment for segment in parts.path.split("/"))
    query = "&".join(f"{name}={MASK}" for name, _value in parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, netloc, path, query, ""))


def _looks_like_a_key(segment: str) -> bool:
    return len(segment) >= 24 or (len(segment) >= 8 and any(c.isdigit() for c in segment)
                                   and any(c.isalpha() for c in segment))


def masked_address(address: str) -> str:
    """An e-mail address as lists show it: `w***@example.com`."""
    local, at, domain = address.partition("@")
    return f"{local[:1]}{MASK}{at}{domain}" if at else MASK
