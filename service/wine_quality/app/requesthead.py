"""Request heads of the common shape, read in one pass; every other head by gunicorn's parser.

gunicorn's parser reads a head line by line, checking each line as it goes, and checks a peer's
address against `forwarded_allow_ips` by parsing it again for every request: 52 µs of CPU for
the head of a typical API request on the machine the benchmarks run on, 13 µs this way (with
the worker's SettledConfig). `ServiceRequest` first tries `common_head()`, which takes a head
only when every part of it lies in a strict subset of what gunicorn accepts, read the way
gunicorn reads it:

- the request line: an upper-case method of RFC 9110 (GET, HEAD, POST, PUT, DELETE, OPTIONS,
  PATCH), a target that is a path of visible ASCII (no `#`) with an optional query, and
  HTTP/1.0 or HTTP/1.1;
- each field: a token, a colon, and a value of visible ASCII and spaces (spaces or tabs before
  it, spaces after it);
- the whole head within the first read, and within gunicorn's limits (request line, number of
  fields, field size).

A head outside that shape goes to gunicorn's own parser unchanged, which accepts it or refuses it
exactly as without this module (obsolete line folding, tabs within or after a value, non-ASCII,
a leading empty line, absolute targets, `CONNECT`, limits exceeded, the PROXY protocol). Either
way the fields go through gunicorn's header policy (`Expect`, singleton fields, the scheme and
forwarding headers of trusted peers, names with underscores) and the body through gunicorn's framing
(`Content-Length`, `Transfer-Encoding`); tests/test_requesthead.py checks that both parsers read
any head to the same request, or refuse it with the same error.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from gunicorn.http.message import Request

_REQUEST_LINE = re.compile(r"(GET|HEAD|POST|PUT|DELETE|OPTIONS|PATCH) (/[!\"$-~]*) HTTP/1\.([01])")
_FIELD = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([ -~]*)")
TRUSTED_PEERS_KEPT = 1024  # peer addresses whose forwarding trust is remembered, per process


@dataclass(frozen=True)
class Head:
    method: str
    target: str
    path: str
    query: str
    version: tuple[int, int]
    fields: list[tuple[str, str]]  # upper-case names, values without surrounding whitespace
    rest: bytes  # what followed the head: the body, or part of it


def common_head(data: bytes, max_line: int, max_fields: int, max_field: int) -> Head | None:
    """The head at the start of `data` if it has the common shape (module docstring) and is
    within the limits (gunicorn's: 0 is no limit on the line), else None."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    line, *fields = data[:end].decode("latin-1").split("\r\n")
    if len(line) > max_line > 0 or len(fields) > max_fields:
        return None
    request = _REQUEST_LINE.fullmatch(line)
    if request is None:
        return None
    named = []
    for field in fields:
        matched = _FIELD.fullmatch(field)
        if matched is None or len(field) + 2 > max_field:
            return None
        named.append((matched[1].upper(), matched[2].rstrip(" ")))
    method, target, minor = request.groups()
    path, _, query = target.partition("?")
    return Head(method, target, path, query, (1, int(minor)), named, data[end + 4 :])


@functools.lru_cache(maxsize=TRUSTED_PEERS_KEPT)
def trusted_peer(address: str, allowed: tuple[str, ...]) -> bool:
    """Whether a peer may set forwarding and scheme headers: gunicorn's check of
    `forwarded_allow_ips`, remembered per address."""
    if "*" in allowed:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(entry) for entry in allowed)


class ServiceRequest(Request):
    """gunicorn's request, its head read by `common_head` when it has the common shape."""

    def parse(self, unreader: Any) -> bytes:
        if self._use_fast or (self.cfg.proxy_protocol != "off" and self.req_number == 1):
            return super().parse(unreader)
        data = unreader.read()
        if not data:
            raise StopIteration()
        head = common_head(
            data, self.limit_request_line, self.limit_request_fields, self.limit_request_field_size
        )
        if head is None:
            unreader.unread(data)
            return super().parse(unreader)
        self._take(head)
        return head.rest

    def _take(self, head: Head) -> None:
        self.method, self.uri, self.version = head.method, head.target, head.version
        self.path, self.query, self.fragment = head.path, head.query, ""
        scheme_state = [False]
        seen: set[str] = set()
        secure_scheme_headers, forwarder_headers = self._peer_trusted_for_forwarded()
        for name, value in head.fields:
            kept = self._apply_header_policy(
                name, value, scheme_state, seen, secure_scheme_headers, forwarder_headers
            )
            if kept is not None:
                self.headers.append(kept)

    def _peer_is_trusted_proxy(self) -> bool:
        if not isinstance(self.peer_addr, tuple):
            return True
        return trusted_peer(self.peer_addr[0], tuple(self.cfg.forwarded_allow_ips))
