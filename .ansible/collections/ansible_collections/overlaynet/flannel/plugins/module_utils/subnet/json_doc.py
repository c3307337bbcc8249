"""JSON documents read from etcd (the network config, lease values): one decoder that cannot
crash, whatever the bytes.

A value is rejected unread above MAX_DOCUMENT_BYTES; it must be UTF-8; nesting is bounded
(MAX_DEPTH, checked before the decoder recurses); NaN and Infinity are refused (they are not
JSON); huge numbers fail cleanly (Python refuses int strings over 4300 digits). Every failure
is the caller's FlannelError subclass, naming what was read and the fix.
"""

from __future__ import annotations

import json
import re
from typing import Any, NoReturn

from ..errors import FlannelError, shown

MAX_DOCUMENT_BYTES = 64 * 1024  # a lease is ~150 bytes, a config ~300
MAX_DEPTH = 32  # flannel's documents nest 3 deep
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_BRACKET = re.compile(r"[\[\]{}]")


def load_json(raw: bytes | str, error: type[FlannelError], what: str, fix: str) -> Any:
    """The decoded document; `error` naming what was read, why and the fix otherwise."""
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise error(f"{what} is not valid JSON for flannel ({len(raw)} bytes, more than the "
                    f"{MAX_DOCUMENT_BYTES} a flannel document may have; not read); {fix}")
    try:
        text = raw.decode("utf-8") if isinstance(raw, (bytes, bytearray)) else raw
    except UnicodeDecodeError as exc:
        raise error(f"{what} is not valid JSON (not UTF-8: {exc.reason} at byte {exc.start}): {shown(raw)}; "
                    f"{fix}") from None
    if nesting(text) > MAX_DEPTH:
        raise error(f"{what} is not valid JSON for flannel (nested deeper than {MAX_DEPTH} levels): "
                    f"{shown(raw)}; {fix}")
    try:
        return json.loads(text, parse_constant=_not_json)
    except (ValueError, RecursionError) as exc:
        raise error(f"{what} is not valid JSON ({shown(str(exc), 120)}): {shown(raw)}; {fix}") from None


def nesting(text: str) -> int:
    """How deep [ and { nest outside strings (an unterminated string counts as text)."""
    depth = deepest = 0
    for bracket in _BRACKET.findall(_STRING.sub("", text)):
        depth = depth + 1 if bracket in "[{" else max(depth - 1, 0)
        deepest = max(deepest, depth)
    return deepest


def _not_json(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON value")
