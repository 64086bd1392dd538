"""JSON in and out of the service: orjson wherever it gives exactly what the json module gives.

Python's json module is most of a large request's cost: about 40 ms to parse a 10,000-row body
and 25 ms to write its answer, against 70 ms of prediction; orjson parses in a fifth of that
time and writes in a tenth. But the service's contract is the json module's (inputs.parse_json),
and orjson reads some documents differently: it keeps the last of duplicate keys (the service
refuses them), refuses NaN, Infinity and lone surrogates (json reads them, and validation then
names the field), turns integers beyond 64 bits into floats, and nests to a different depth.

`loads_plain(data)` therefore returns orjson's result only for a document both read the same:
- orjson accepts it (it refuses a UTF-8 byte order mark, which json skips);
- no run of PLAIN_MAX_DIGITS + 1 digits, so every integer fits in 64 bits;
- as many ':' bytes as there are keys in all its objects: every key is followed by exactly one
  ':' outside strings, so equality means no object repeats a key (and no string holds a ':');
- nesting at most PLAIN_MAX_DEPTH deep.
Anything else is NOT_PLAIN, and the caller parses with the json module, which decides the answer
and the error message. tests/test_jsoncodec.py checks on generated documents that both ways agree.

`JsonProvider.response` (Flask's jsonify) writes with orjson, and hands anything orjson cannot
write (numpy scalars, keys that are not strings) to Flask's own provider. The text differs from
the json module's only in spelling: non-ASCII characters as UTF-8 instead of \\u escapes, and
small exponents as 1e-7 instead of 1e-07; NaN, which json writes as the invalid token NaN, is
null.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain
from typing import Any

import orjson
from flask import Response
from flask.json.provider import DefaultJSONProvider

PLAIN_MAX_DIGITS = 18  # any integer of at most 18 digits fits orjson's 64-bit integers
PLAIN_MAX_DEPTH = 32  # far inside both parsers' limits; request bodies nest 5 deep at most

NOT_PLAIN = object()

_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_DIGIT_RUN = b"0" * (PLAIN_MAX_DIGITS + 1)
_CONTAINERS = frozenset((dict, list))


def loads_plain(data: bytes) -> Any:
    """orjson's parse of `data` when the json module would return the same, else NOT_PLAIN."""
    if _DIGIT_RUN in data.translate(_DIGITS_AS_ZERO):  # a copy, gone before parsing starts
        return NOT_PLAIN
    try:
        payload = orjson.loads(data)
    except orjson.JSONDecodeError:
        return NOT_PLAIN
    brackets = data.count(b"{") + data.count(b"[")
    if _keys_within_depth(payload, brackets) != data.count(b":"):
        return NOT_PLAIN
    return payload


def _keys_within_depth(payload: Any, brackets: int) -> int | None:
    """How many keys the objects in `payload` hold together; None when it nests deeper than
    PLAIN_MAX_DEPTH. `brackets` counts the document's '{' and '[' bytes, at least one per object
    and array: a walk that has met that many containers has met them all, so the last level
    (the numbers of a batch) is never scanned."""
    keys = met = 0
    dicts = [payload] if type(payload) is dict else []
    lists = [payload] if type(payload) is list else []
    for _ in range(PLAIN_MAX_DEPTH):
        keys += sum(map(len, dicts))
        met += len(dicts) + len(lists)
        if met >= brackets:
            return keys
        kinds = set(map(type, _children(dicts, lists)))
        if kinds.isdisjoint(_CONTAINERS):
            return keys
        children = list(_children(dicts, lists))
        if kinds == {dict}:  # a batch of objects
            dicts, lists = children, []
        else:
            dicts = [child for child in children if type(child) is dict]
            lists = [child for child in children if type(child) is list]
    return None


def _children(dicts: list[dict], lists: list[list]) -> Iterator[Any]:
    return chain(chain.from_iterable(map(dict.values, dicts)), chain.from_iterable(lists))


_WRITE_OPTIONS = orjson.OPT_APPEND_NEWLINE  # Flask's jsonify ends its text with a newline


class JsonProvider(DefaultJSONProvider):
    """Flask's JSON provider, writing responses with orjson (compact, keys in insertion order
    unless `sort_keys`; indented when `compact` is False or the app is in debug mode)."""

    sort_keys = False

    def response(self, *args: Any, **kwargs: Any) -> Response:
        obj = self._prepare_response_obj(args, kwargs)
        indent = (self.compact is None and self._app.debug) or self.compact is False
        options = (
            _WRITE_OPTIONS
            | (orjson.OPT_SORT_KEYS if self.sort_keys else 0)
            | (orjson.OPT_INDENT_2 if indent else 0)
        )
        try:
            body = orjson.dumps(obj, option=options)
        except orjson.JSONEncodeError:  # a type only Flask's provider writes
            return super().response(obj)
        return self._app.response_class(body, mimetype=self.mimetype)
