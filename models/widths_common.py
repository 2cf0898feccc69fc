"""What the width families (`models.widths_resnet`, `models.widths_densenet`) share: the header
token, channel sets written as ranges, errors that point at the bad token, and the key.

Grammar pieces (README "Gu & Tresp gates"): a string is ``<prefix>:`` then tokens joined by
``|``; the first token is ``in<pixels>_cls<classes>``.  A channel set is ranges joined by ``.``
(``0-11.14.20-23``): sorted, disjoint, not touching (``0-3.4`` is written ``0-4``), so each set
has exactly one spelling.  Pure Python (no torch).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

_HEADER = re.compile(r"in(\d+)_cls(\d+)")
_RANGE = re.compile(r"(\d+)(?:-(\d+))?")


class WidthStringError(ValueError):
    """A malformed width-family string; the message names the token (1-based) and its text."""


def fail(text: str, position: int, token: str, message: str) -> None:
    raise WidthStringError(f"{text[:48]!r}...: token {position} {token!r}: {message}")


def construct(text: str, tokens: list[str], make):
    """``make()``, a validation error of the whole network pinned to the string's last token."""
    try:
        return make()
    except ValueError as error:
        fail(text, len(tokens), tokens[-1], str(error))
    raise AssertionError  # unreachable: fail raises


def split_tokens(text: str, prefix: str) -> list[str]:
    if not text.startswith(f"{prefix}:"):
        raise WidthStringError(f"{text[:40]!r} does not start with {prefix + ':'!r}")
    return text[len(prefix) + 1 :].split("|")


def parse_header(text: str, token: str) -> tuple[int, int]:
    match = _HEADER.fullmatch(token)
    if not match:
        fail(text, 1, token, "expected in<pixels>_cls<classes>, e.g. in32_cls10")
    size, classes = int(match.group(1)), int(match.group(2))
    if size < 8 or classes < 2:
        fail(text, 1, token, "input must be >= 8 px and classes >= 2")
    return size, classes


def encode_set(channels: Iterable[int]) -> str:
    """Sorted distinct channel indices as ranges: [0, 1, 2, 5] -> ``0-2.5``."""
    values = sorted(set(channels))
    parts, start = [], None
    for i, value in enumerate(values):
        if start is None:
            start = value
        if i + 1 == len(values) or values[i + 1] != value + 1:
            parts.append(str(start) if start == value else f"{start}-{value}")
            start = None
    return ".".join(parts)


def decode_set(spelled: str, limit: int) -> tuple[int, ...]:
    """The channel indices `spelled` names, each in [0, limit); ValueError if not canonical."""
    values: list[int] = []
    for part in spelled.split("."):
        match = _RANGE.fullmatch(part)
        if not match:
            raise ValueError(f"{part!r} is not a channel index or range a-b")
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) is not None else low
        if high < low:
            raise ValueError(f"range {part!r} runs backwards")
        values.extend(range(low, high + 1))
    if not values:
        raise ValueError("empty channel set")
    if values[-1] >= limit:
        raise ValueError(f"channel {values[-1]} is out of range: the input has {limit} channels")
    if encode_set(values) != spelled:
        raise ValueError(f"not canonical: write it {encode_set(values)!r} (sorted, merged)")
    return tuple(values)


def positive_int(text: str, position: int, token: str, field: str, value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        fail(text, position, token, f"{field} must be a positive integer, got {value!r}")
    return int(value)


def key_of(encoded: str) -> str:
    """Stable 16-hex-digit identity: sha256 of the canonical string (as `models.arch.Arch`)."""
    return hashlib.sha256(encoded.encode("ascii")).hexdigest()[:16]
