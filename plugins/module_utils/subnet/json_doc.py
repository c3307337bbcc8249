"""JSON documents read from etcd (the network config, lease values): one decoder, one error shape."""

from __future__ import annotations

import json
from typing import Any

from ..errors import FlannelError


def load_json(raw: bytes | str, error: type[FlannelError], what: str, fix: str) -> Any:
    """The decoded document; `error` naming what was read, the JSON error and the fix otherwise."""
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise error(f"{what} is not valid JSON ({exc}): {raw!r}; {fix}") from None
