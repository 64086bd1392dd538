"""The worker's request class (app/requesthead.py) reads every request head exactly as gunicorn's
own parser does: the same method, target, version, fields, scheme, expectation, body framing and
body, or the same error, under the default settings and under tight limits, trusted proxies and
the other header policies; whatever the head, and whether it arrives at once or in pieces. The
common heads are read by its own pass (the second part), and the worker's connections use it."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from gunicorn.config import Config
from gunicorn.http.message import Request, _ip_in_allow_list
from gunicorn.http.parser import RequestParser
from gunicorn.http.unreader import IterUnreader
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wine_quality.app.requesthead import ServiceRequest, common_head, trusted_peer
from wine_quality.app.worker import Connection, SettledConfig

PEER = ("127.0.0.1", 40000)


def config(**values: object) -> Config:
    cfg = Config()
    for name, value in values.items():
        cfg.set(name, value)
    return cfg


CONFIGS = {
    "defaults": config(),
    "tight limits": config(
        limit_request_line=40, limit_request_fields=3, limit_request_field_size=40
    ),
    "every peer a trusted proxy": config(
        forwarded_allow_ips="*", forwarder_headers="SCRIPT_NAME,X_FORWARDED_FOR"
    ),
    "refuse underscores, strip spaces, casefold": config(
        header_map="refuse", strip_header_spaces=True, casefold_http_method=True
    ),
    "unconventional methods and versions, folding": config(
        permit_unconventional_http_method=True,
        permit_unconventional_http_version=True,
        permit_obsolete_folding=True,
        header_map="dangerous",
    ),
}


def reading(request_class: type, cfg: Config, pieces: list[bytes], peer: object = PEER) -> tuple:
    """Everything the worker and the app see of a request read from `pieces`, or the error."""
    unreader = IterUnreader(pieces)
    try:
        req = request_class(cfg, unreader, peer, 1)
    except Exception as error:  # the error is the result to compare
        return ("refused", type(error).__name__, str(error))
    try:
        body = req.body.read()
    except Exception as error:
        body = (type(error).__name__, str(error))
    return (
        req.method,
        req.uri,
        req.path,
        req.query,
        req.fragment,
        req.version,
        req.headers,
        req.scheme,
        req._expected_100_continue,
        req.should_close(),
        type(req.body.reader).__name__,
        body,
        unreader.read(),
    )


def assert_read_alike(data: bytes, cfg: Config, cut: int | None = None) -> None:
    pieces = [data] if cut is None else [data[:cut], data[cut:]]
    ours = reading(ServiceRequest, SettledConfig(cfg), pieces)
    assert ours == reading(Request, cfg, pieces)


COMMON = [
    b"POST /v1/predict HTTP/1.1\r\nHost: wine:8080\r\nContent-Type: application/json\r\n"
    b'Content-Length: 9\r\n\r\n{"a": 1}\n',
    b"GET /readyz HTTP/1.1\r\nHost: 10.0.0.7:8080\r\nUser-Agent: kube-probe/1.31\r\n"
    b"Accept: */*\r\nConnection: close\r\n\r\n",
    b"GET /metrics?name[]=x HTTP/1.0\r\n\r\n",
    b"GET //evil.example/x?a?b HTTP/1.1\r\n\r\n",
    b"HEAD / HTTP/1.1\r\nHost: h\r\nAccept-Encoding: gzip, deflate\r\n\r\n",
    b"POST /v2/models/wine-quality/infer HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
    b"\r\n3\r\nabc\r\n0\r\n\r\n",
    b"POST /predict HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\nabcd",
    b"POST /predict HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nabGET / HTTP/1.1\r\n\r\n",
    b"DELETE /x?y=1&z=%20 HTTP/1.1\r\nhost:h\r\nX-Forwarded-Proto: https\r\n"
    b"X-Forwarded-For: 10.0.0.1\r\nX_Forwarded_For: 1.2.3.4\r\nX-Empty:\r\n"
    b"X-Spaced:   a  b   \r\n\r\n",
]

UNCOMMON = [
    b"\r\nGET / HTTP/1.1\r\n\r\n",  # one empty line before the request line
    b"GET /a#fragment HTTP/1.1\r\n\r\n",
    b"GET http://h/a HTTP/1.1\r\nHost: h\r\n\r\n",
    b"CONNECT h:443 HTTP/1.1\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\n\r\n",
    b"get / HTTP/1.1\r\n\r\n",
    b"PROPFIND / HTTP/1.1\r\n\r\n",
    b"GET / HTTP/2.0\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-Tab:\ta\tb\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-Tab: a\t\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-Latin: caf\xe9\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-Folded: a\r\n  b\r\n\r\n",
    b"GET / HTTP/1.1\r\nName : value\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-Null: a\x00b\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-Bare: a\nb\r\n\r\n",
    b"GET / HTTP/1.1\nHost: h\n\n",
    b"GET / HTTP/1.1\r\nHost: h\r\n",  # the head never ends
    b"GET /\xe9 HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nNoColon\r\n\r\n",
    b"GET / HTTP/1.1\r\n: empty name\r\n\r\n",
]

REFUSED = [  # common in shape: refused by gunicorn's header policy or framing, read by both
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
    b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
    b"GET / HTTP/1.1\r\nExpect: 200-ok\r\n\r\n",
    b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET / HTTP/1.1\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Ssl: off\r\n\r\n",
    b"GET /" + b"a" * 8200 + b" HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-Long: " + b"v" * 8200 + b"\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 101 + b"\r\n",
]


@pytest.mark.parametrize("cfg", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("data", COMMON + UNCOMMON + REFUSED)
def test_a_head_is_read_as_gunicorn_reads_it(data: bytes, cfg: Config) -> None:
    assert_read_alike(data, cfg)
    assert_read_alike(data, cfg, cut=len(data) // 2)


def at_the_limits() -> list[bytes]:
    """Heads one short of, at and one past each limit of CONFIGS["tight limits"]: a request
    line of 40 characters, 3 fields, a field of 40 bytes with its line end."""
    heads = []
    for past in (-1, 0, 1):
        heads.append(f"GET /{'a' * (26 + past)} HTTP/1.1\r\n\r\n".encode())
        heads.append(f"GET / HTTP/1.1\r\nX-A: {'v' * (33 + past)}\r\n\r\n".encode())
        heads.append(("GET / HTTP/1.1\r\n" + "X-A: 1\r\n" * (3 + past) + "\r\n").encode())
    return heads


@pytest.mark.parametrize("data", at_the_limits())
def test_a_head_at_a_limit_is_read_as_gunicorn_reads_it(data: bytes) -> None:
    assert_read_alike(data, CONFIGS["tight limits"])


# A generated head is of the common shape but for at most one part, often none, so that most
# heads are read by the one-pass path and the two paths meet at every part.
COMMON_PARTS = {
    "lead": st.just(""),
    "method": st.sampled_from(["GET", "POST", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"]),
    "target": st.lists(st.sampled_from(list("/az09?&=%.-_~:@!$'()*+,;[]\"")), max_size=20).map(
        lambda chars: "/" + "".join(chars)
    ),
    "version": st.sampled_from(["HTTP/1.1", "HTTP/1.0"]),
    "name": st.one_of(
        st.sampled_from(
            [
                "Host",
                "Content-Length",
                "Transfer-Encoding",
                "Expect",
                "Connection",
                "X-Forwarded-Proto",
                "X-Forwarded-For",
                "X_Forwarded_For",
                "Script_Name",
                "X-Forwarded-Ssl",
                "Content-Type",
            ]
        ),
        st.text(st.sampled_from(list("aZ-_!~|'")), min_size=1, max_size=6),
    ),
    "separator": st.sampled_from([": ", ":", ":  ", ": \t "]),
    "value": st.one_of(
        st.sampled_from(["1", "0", "5", "-1", "chunked", "gzip, chunked", "100-continue"]),
        st.sampled_from(["close", "keep-alive", "https", "on", "10.0.0.1", "a, b", "1 ", ""]),
        st.text(st.sampled_from(list("a1 ,;=~")), max_size=10),
    ),
    "line end": st.just("\r\n"),
    "end": st.just("\r\n"),
}
UNCOMMON_PARTS = {
    "lead": st.sampled_from(["\r\n", "\n", " "]),
    "method": st.sampled_from(["get", "Post", "PROPFIND", "GE", "G#T", "", "CONNECT", "M-SEARCH"]),
    "target": st.one_of(
        st.lists(st.sampled_from(list("/a?# \t\x00\x7f\xe9\\")), max_size=8).map(
            lambda chars: "/" + "".join(chars)
        ),
        st.sampled_from(["*", "http://h/p?q", "h:443", "", "a"]),
    ),
    "version": st.sampled_from(["HTTP/2.0", "HTTP/1.2", "http/1.1", "HTTP/11", "HTTP/1.1 "]),
    "name": st.text(st.sampled_from(list("aZ-_ :\t\x00é")), max_size=6),
    "separator": st.sampled_from([" : ", ":\t", "\t:", ""]),
    "value": st.text(st.sampled_from(list("a1 ,\t\x00\x7f\x80é\n\r")), max_size=10),
    "line end": st.sampled_from(["\n", "\r", "\r\n ", " \r\n", "\t\r\n", "\r\n\t"]),
    "end": st.sampled_from(["", "\n", "\r"]),
}


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    odd = draw(st.sampled_from([None, None, None, *COMMON_PARTS]))

    def part(name: str) -> str:
        return draw(UNCOMMON_PARTS[name] if odd == name else COMMON_PARTS[name])

    head = f"{part('lead')}{part('method')} {part('target')} {part('version')}\r\n"
    for _ in range(draw(st.integers(0, 5))):
        head += f"{part('name')}{part('separator')}{part('value')}{part('line end')}"
    head += part("end")
    body = draw(st.sampled_from([b"", b"x", b"abcde", b"3\r\nabc\r\n0\r\n\r\n", b"GET / HTTP/1.1"]))
    return head.encode("latin-1") + body


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests(), st.sampled_from(list(CONFIGS)), st.integers(0, 200))
def test_any_head_is_read_as_gunicorn_reads_it(data: bytes, name: str, cut: int) -> None:
    cfg = CONFIGS[name]
    assert_read_alike(data, cfg)
    assert_read_alike(data, cfg, cut=min(cut, len(data)))


@settings(max_examples=1500, deadline=None)
@given(st.binary(max_size=120), st.sampled_from(list(CONFIGS)))
def test_any_bytes_after_a_request_line_are_read_as_gunicorn_reads_them(
    tail: bytes, name: str
) -> None:
    assert_read_alike(b"POST /v1/predict HTTP/1.1\r\n" + tail, CONFIGS[name])


# ------------------------------------------------------------------------ the one-pass path


def taken(data: bytes) -> bool:
    cfg = Config()
    limits = (cfg.limit_request_line, cfg.limit_request_fields, cfg.limit_request_field_size)
    return common_head(data, *limits) is not None


@pytest.mark.parametrize("data", COMMON + REFUSED[:9])
def test_common_heads_are_read_in_one_pass(data: bytes) -> None:
    assert taken(data)


@pytest.mark.parametrize("data", UNCOMMON + REFUSED[9:])
def test_other_heads_are_left_to_gunicorn(data: bytes) -> None:
    assert not taken(data)


def test_a_head_arriving_in_pieces_is_left_to_gunicorn() -> None:
    data = COMMON[0]
    assert not taken(data[: data.index(b"\r\n\r\n") + 2])


# ------------------------------------------------------------------------ trusted peers

ALLOW_LISTS = [
    ("127.0.0.1", "::1"),
    ("*",),
    ("10.0.0.0/8", "fd00::/8"),
    ("192.168.1.7",),
    (),
]
ADDRESSES = ["127.0.0.1", "::1", "10.1.2.3", "192.168.1.7", "192.168.1.8", "fd00::1", "x", ""]


@pytest.mark.parametrize("allowed", ALLOW_LISTS)
@pytest.mark.parametrize("address", ADDRESSES)
def test_a_peer_is_trusted_as_gunicorn_trusts_it(address: str, allowed: tuple[str, ...]) -> None:
    networks = [ipaddress.ip_network(entry) for entry in allowed if entry != "*"]
    assert trusted_peer(address, allowed) == _ip_in_allow_list(address, list(allowed), networks)


def test_a_unix_socket_peer_is_trusted_as_by_gunicorn() -> None:
    data = b"GET / HTTP/1.1\r\nX-Forwarded-Proto: https\r\n\r\n"
    cfg = Config()
    ours = reading(ServiceRequest, SettledConfig(cfg), [data], peer="/run/wine.sock")
    assert ours == reading(Request, cfg, [data], peer="/run/wine.sock")
    assert ours[7] == "https"


# ------------------------------------------------------------------------ the worker


def test_settled_config_answers_as_gunicorn_config() -> None:
    cfg = config(forwarded_allow_ips="10.0.0.0/8", limit_request_line=100, keyfile=None)
    settled = SettledConfig(cfg)
    for name in cfg.settings:
        assert getattr(settled, name) == getattr(cfg, name), name
    for name in ("is_ssl", "address", "sendfile", "reuse_port", "env", "proc_name"):
        assert getattr(settled, name) == getattr(cfg, name), name
    assert settled.forwarded_allow_networks() == cfg.forwarded_allow_networks()


def test_the_worker_connections_read_requests_with_the_service_request() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        connection = Connection(SettledConfig(Config()), ours, PEER, ("127.0.0.1", 8080))
        connection.init()
        assert isinstance(connection.parser, RequestParser)
        theirs.sendall(COMMON[0])
        req = next(connection.parser)
        assert type(req) is ServiceRequest
        assert (req.method, req.path, req.body.read()) == ("POST", "/v1/predict", b'{"a": 1}\n')
