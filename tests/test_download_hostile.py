"""The url_list fetcher against a hostile web (issue 15): private addresses in every spelling and behind
redirects, DNS answers that change between lookups, malformed URLs and Location headers, and servers that
trickle their headers or bodies. Every request goes to real servers on 127.0.0.1 and 127.0.0.2."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time

import pandas as pd
import pytest
from image_server import ImageServer, image_bytes
from source_config import source_config

from vlalign.data.address_policy import AddressPolicy
from vlalign.data.download import run_download
from vlalign.data.fetch import Fetcher

ONLY_SERVER = ["127.0.0.1/32"]  # the server, and nothing else on loopback

REFUSED = {
    "127.0.0.1": "loopback", "127.255.0.9": "loopback", "::1": "loopback",
    "10.1.2.3": "private", "172.16.0.1": "private", "192.168.1.1": "private", "fd00::1": "private (unique local)",
    "169.254.169.254": "link-local", "fe80::1": "link-local",
    "100.64.0.1": "shared address space (CGNAT)", "100.127.255.254": "shared address space (CGNAT)",
    "224.0.0.1": "multicast", "239.255.255.250": "multicast", "ff02::1": "multicast",
    "240.0.0.1": "reserved", "255.255.255.255": "reserved", "192.0.2.1": "reserved (documentation)",
    "198.18.0.1": "reserved (benchmarking)", "2001:db8::1": "reserved (documentation)",
    "0.0.0.0": "unspecified", "0.1.2.3": "unspecified", "::": "unspecified",
    "::ffff:169.254.169.254": "link-local", "::ffff:10.0.0.1": "private", "::ffff:127.0.0.1": "loopback",
    "::127.0.0.1": "loopback", "::a9fe:a9fe": "link-local",  # IPv4-compatible
    "64:ff9b::a9fe:a9fe": "link-local", "2002:c0a8:0101::1": "private",  # NAT64 and 6to4 carrying private ones
}  # fmt: skip
PUBLIC = ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1"]


@pytest.mark.parametrize("address,what", sorted(REFUSED.items()))
def test_non_public_addresses_are_refused_with_what_they_are(address, what):
    refusal = AddressPolicy().refusal(ipaddress.ip_address(address))
    assert refusal is not None and refusal.endswith(f"({what})"), refusal
    assert refusal.startswith(str(ipaddress.ip_address(address)))


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address):
    assert AddressPolicy().refusal(ipaddress.ip_address(address)) is None


def test_allowed_networks_cover_their_ipv4_mapped_spelling_and_nothing_else():
    policy = AddressPolicy(ONLY_SERVER)
    assert policy.refusal(ipaddress.ip_address("127.0.0.1")) is None
    assert policy.refusal(ipaddress.ip_address("::ffff:127.0.0.1")) is None
    assert policy.refusal(ipaddress.ip_address("127.0.0.2")) == "127.0.0.2 (loopback)"
    assert policy.refusal(ipaddress.ip_address("::1")) == "::1 (loopback)"


@pytest.fixture
def server():
    with_server = ImageServer().start()
    yield with_server
    with_server.stop()


@pytest.fixture
def neighbour():
    """A second server, on 127.0.0.2: a host on a network the policy does not allow."""
    other = ImageServer(host="127.0.0.2").start()
    yield other
    other.stop()


def fetcher(allow=(), timeout_s: float = 3, resolve=socket.getaddrinfo) -> Fetcher:
    return Fetcher(max_bytes=1_000_000, timeout_s=timeout_s, retries=0, allow_networks=allow, resolve=resolve)


# Every way of writing 127.0.0.1 into a URL's host.
SPELLINGS = ["127.0.0.1", "2130706433", "0x7f000001", "0x7f.0.0.1", "0177.0.0.1", "017700000001", "127.1",
             "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "localhost"]  # fmt: skip


@pytest.mark.parametrize("host", SPELLINGS)
def test_every_spelling_of_loopback_is_refused_before_connecting(server, host):
    fetched = fetcher().fetch(f"http://{host}:{server.port}/jpg/a")
    assert fetched.error == "refused_address" and "(loopback)" in fetched.detail, fetched
    assert "127.0.0.1" in fetched.detail  # the address the spelling means is named
    assert server.hits["/jpg/a"] == 0


@pytest.mark.parametrize("host", SPELLINGS)
def test_every_spelling_reaches_a_server_on_an_allowed_network(server, host):
    # localhost may resolve to ::1 as well, where nothing listens: the next address is tried.
    fetched = fetcher(allow=[*ONLY_SERVER, "::1/128"]).fetch(f"http://{host}:{server.port}/jpg/a")
    assert fetched.error is None and fetched.data.startswith(b"\xff\xd8\xff"), fetched
    assert server.hits["/jpg/a"] == 1


PRIVATE_TARGETS = {
    "http://169.254.169.254/latest/meta-data/": "169.254.169.254 (link-local)",
    "http://2852039166/latest/meta-data/": "169.254.169.254 (link-local)",  # decimal
    "http://0xa9.0xfe.0xa9.0xfe/": "169.254.169.254 (link-local)",  # hex
    "http://0251.0376.0251.0376/": "169.254.169.254 (link-local)",  # octal
    "http://[::ffff:169.254.169.254]/": "169.254.169.254 (link-local)",  # IPv4-mapped IPv6
    "http://[::ffff:a9fe:a9fe]/": "169.254.169.254 (link-local)",
    "http://10.0.0.1/": "10.0.0.1 (private)",
    "http://192.168.0.1:8080/admin": "192.168.0.1 (private)",
    "http://100.100.100.200/": "100.100.100.200 (shared address space (CGNAT))",  # Alibaba's metadata address
    "http://[fd00:ec2::254]/": "fd00:ec2::254 (private (unique local))",  # AWS's IPv6 metadata address
    "http://0/": "0.0.0.0 (unspecified)",
}


@pytest.mark.parametrize("target,named", sorted(PRIVATE_TARGETS.items()))
def test_redirects_to_private_addresses_are_refused_and_named(server, target, named):
    started = time.monotonic()
    fetched = fetcher(allow=ONLY_SERVER).fetch(server.url("/to") + "?location=" + target)
    assert fetched.error == "refused_address" and named in fetched.detail, fetched
    assert fetched.data is None and time.monotonic() - started < 2  # refused, not tried until a timeout


def test_a_redirect_to_another_loopback_host_never_reaches_it(server, neighbour):
    for location in (neighbour.url("/jpg/a"), f"http://0x7f000002:{neighbour.port}/jpg/a",
                     f"http://[::ffff:127.0.0.2]:{neighbour.port}/jpg/a"):  # fmt: skip
        fetched = fetcher(allow=ONLY_SERVER).fetch(server.url("/to") + "?location=" + location)
        assert fetched.error == "refused_address" and "127.0.0.2 (loopback)" in fetched.detail, fetched
    assert sum(neighbour.hits.values()) == 0
    # Named, the network is fetched from: the refusal above was the policy's, not a broken route.
    fetched = fetcher(allow=["127.0.0.0/8"]).fetch(server.url("/to") + "?location=" + neighbour.url("/jpg/a"))
    assert fetched.error is None and neighbour.hits["/jpg/a"] == 1


class Rebinding:
    """A resolver whose first answer is the allowed server and every later one another host: what a DNS
    rebinding attack does between a check and a connect."""

    def __init__(self, first: str, later: list[str]):
        self.first, self.later, self.calls = first, later, 0

    def __call__(self, host, port, family=0, type=0, *args):
        self.calls += 1
        answers = [self.first] if self.calls == 1 else self.later
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)) for address in answers]


def test_the_connection_goes_to_the_checked_address_never_to_a_second_lookup(server, neighbour):
    resolve = Rebinding("127.0.0.1", ["127.0.0.2"])
    fetched = fetcher(allow=ONLY_SERVER, resolve=resolve).fetch(f"http://images.example:{server.port}/jpg/a")
    assert fetched.error is None
    assert resolve.calls == 1 and server.hits["/jpg/a"] == 1 and sum(neighbour.hits.values()) == 0


def test_one_refused_answer_refuses_the_host(server):
    mixed = lambda host, port, *args: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))  # noqa: E731
                                       for a in ("127.0.0.1", "169.254.169.254")]  # fmt: skip
    fetched = fetcher(allow=ONLY_SERVER, resolve=mixed).fetch(f"http://images.example:{server.port}/jpg/a")
    assert fetched.error == "refused_address" and "169.254.169.254 (link-local)" in fetched.detail
    assert server.hits["/jpg/a"] == 0


@pytest.mark.parametrize("url,error", [
    ("http://[::1/a.jpg", "bad_url"), ("http://]::1[/a.jpg", "bad_url"), ("http://[zz::1]/a.jpg", "bad_url"),
    ("http://[::1]]/a.jpg", "refused_address"),  # read as [::1]
    ("http://127.0.0.1:99999/a.jpg", "bad_url"), ("http://127.0.0.1:port/a.jpg", "bad_url"),
    ("http:///a.jpg", "bad_url"), ("http://" + "a" * 64 + ".example/x.jpg", "bad_url"),  # a DNS label over 63
    ("ftp://127.0.0.1/a.jpg", "bad_scheme"), ("javascript:alert(1)", "bad_scheme"), ("", "bad_scheme"),
])  # fmt: skip
def test_malformed_urls_are_a_row_status(url, error):
    fetched = fetcher().fetch(url)
    assert fetched.error == error, fetched


@pytest.mark.parametrize("location", ["http://[::1", "http://]::1[/", "http://[zz::1]/", "http://127.0.0.1:99999/",
                                      "ftp://x/", "http://[::1]]:80/", "\r\nX: y", "/to?location=http://%5B::1"])  # fmt: skip
def test_malformed_location_headers_are_a_row_status(server, location):
    server.routes["/bad-location"] = (302, [("Location", location)], b"")
    fetched = fetcher(allow=ONLY_SERVER).fetch(server.url("/bad-location"))
    assert fetched.error in ("bad_url", "bad_scheme", "refused_address", "http_302"), fetched


def test_a_non_ascii_url_is_percent_encoded_and_fetched(server):
    server.files["caf\u00e9 cr\u00e8me.jpg"] = image_bytes("JPEG")
    fetched = fetcher(allow=ONLY_SERVER).fetch(server.url("/files/caf\u00e9 cr\u00e8me.jpg"))
    assert fetched.error is None and server.hits["/files/caf%C3%A9%20cr%C3%A8me.jpg"] == 1


@pytest.mark.parametrize("path", ["/trickle-body", "/trickle-headers", "/slow"])
def test_a_trickling_server_is_cut_at_the_deadline(server, path):
    """One byte every 0.2 s never trips a per-read timeout; the attempt still ends at timeout_s."""
    started = time.monotonic()
    fetched = fetcher(allow=ONLY_SERVER, timeout_s=1.5).fetch(server.url(path))
    took = time.monotonic() - started
    assert fetched.error == "timeout" and "1.5 s" in fetched.detail, fetched
    assert ("headers" in fetched.detail) == (path != "/trickle-body"), fetched.detail
    assert 1.5 <= took < 2.5, took


def test_the_deadline_covers_every_hop_of_a_redirect_chain(server):
    slow = server.url("/jpg/late?delay=0.8")
    chain = server.url("/to") + "?location=" + server.url("/to") + "%3Flocation%3D" + slow.replace("?", "%253F")
    started = time.monotonic()
    fetched = fetcher(allow=ONLY_SERVER, timeout_s=0.5).fetch(chain)
    assert fetched.error == "timeout" and time.monotonic() - started < 1.5, fetched


def test_sixteen_trickling_urls_do_not_stall_a_download(server, tmp_path):
    """The ISSUE's case: 16 such URLs among good ones; every row ends within its deadline, the list finishes."""
    urls = [server.url(f"/trickle-{'body' if i % 2 else 'headers'}?row={i}") for i in range(16)]
    urls += [server.url(f"/jpg/good{i}") for i in range(16)]
    pd.DataFrame({"url": urls, "caption": [f"row {i}" for i in range(32)]}).to_parquet(tmp_path / "urls.parquet")
    source = source_config("url_list", path=str(tmp_path / "urls.parquet"), timeout_s=1, retries=0, threads=16)
    started = time.monotonic()
    summary = run_download("web", source, tmp_path / "out", None, 8)
    assert time.monotonic() - started < 8
    assert summary["items"] == 32 and summary["ok"] == 16 and summary["error.timeout"] == 16


def test_a_private_redirect_in_a_list_is_a_refused_row_and_the_rest_download(server, tmp_path):
    urls = [server.url("/to?location=http://169.254.169.254/latest/"), "http://[::1/a.jpg", server.url("/jpg/ok")]
    pd.DataFrame({"url": urls, "caption": ["a", "b", "c"]}).to_parquet(tmp_path / "urls.parquet")
    source = source_config("url_list", path=str(tmp_path / "urls.parquet"), allow_networks=ONLY_SERVER, retries=0)
    run_download("web", source, tmp_path / "out", None, 8)
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet")
    assert manifest["error"].tolist()[:2] == ["refused_address", "bad_url"] and manifest["status"].tolist()[2] == "ok"
    assert "169.254.169.254 (link-local)" in manifest["detail"][0]


def test_the_default_policy_refuses_the_tests_own_server(server, tmp_path):
    """Without `allow_networks` a list pointing at this machine downloads nothing and says why."""
    pd.DataFrame({"url": [server.url("/jpg/a")], "caption": ["a"]}).to_parquet(tmp_path / "urls.parquet")
    source = source_config("url_list", path=str(tmp_path / "urls.parquet"), allow_networks=[])
    summary = run_download("web", source, tmp_path / "out", None, 8)
    assert summary["error.refused_address"] == 1 and server.hits["/jpg/a"] == 0


def test_a_bad_allowed_network_is_refused_before_any_download(tmp_path):
    pd.DataFrame({"url": ["http://example.invalid/a.jpg"], "caption": ["a"]}).to_parquet(tmp_path / "urls.parquet")
    source = source_config("url_list", path=str(tmp_path / "urls.parquet"), allow_networks=["10.0.0.0/33"])
    with pytest.raises(ValueError, match=r"sources.web.allow_networks: '10.0.0.0/33' is not a network"):
        run_download("web", source, tmp_path / "out", None, 8)


def test_a_server_that_compresses_anyway_is_inflated_up_to_max_bytes(server):
    import gzip

    image = image_bytes("PNG", size=(300, 300))
    server.routes["/gz.png"] = (200, [("Content-Encoding", "gzip")], gzip.compress(image))
    assert fetcher(allow=ONLY_SERVER).fetch(server.url("/gz.png")).data == image
    server.routes["/bomb.gz"] = (200, [("Content-Encoding", "gzip")], gzip.compress(bytes(50_000_000)))
    fetched = fetcher(allow=ONLY_SERVER).fetch(server.url("/bomb.gz"))
    assert fetched.error == "too_large_bytes" and fetched.received < 100_000


def test_garbage_responses_are_bad_responses(server):
    for name, raw in {"/junk": b"\x00\xff garbage\r\n\r\n", "/many-headers": b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 200,
                      "/bad-chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"}.items():  # fmt: skip
        server.raw[name] = raw
        fetched = fetcher(allow=ONLY_SERVER).fetch(server.url(name))
        assert fetched.error in ("bad_response", "truncated_transfer", "connection_error"), (name, fetched)


# HTTPS: the connection goes to the checked address while TLS checks the URL's host name.
@pytest.fixture(scope="module")
def authority():
    trustme = pytest.importorskip("trustme")
    return trustme.CA()


def tls_server(authority, *names: str) -> ImageServer:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert(*names).configure_cert(context)
    return ImageServer(tls=context).start()


def trusting_fetcher(authority, tmp_path, **kw) -> Fetcher:
    authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    return Fetcher(max_bytes=1_000_000, timeout_s=3, retries=0, allow_networks=ONLY_SERVER,
                   ca_file=str(tmp_path / "ca.pem"), **kw)  # fmt: skip


def test_https_to_a_pinned_address_checks_the_urls_host_name(authority, tmp_path):
    server = tls_server(authority, "images.example")
    try:
        url = f"https://images.example:{server.port}/jpg/a"
        good = trusting_fetcher(authority, tmp_path, resolve=Rebinding("127.0.0.1", ["127.0.0.2"])).fetch(url)
        assert good.error is None and good.data.startswith(b"\xff\xd8\xff"), good
        # The same server for another name, or a certificate from an authority nobody trusts: refused.
        other = f"https://other.example:{server.port}/jpg/a"
        wrong_name = trusting_fetcher(authority, tmp_path, resolve=Rebinding("127.0.0.1", [])).fetch(other)
        assert wrong_name.error == "ssl_error" and "other.example" in wrong_name.detail, wrong_name
        untrusted = fetcher(allow=ONLY_SERVER, resolve=Rebinding("127.0.0.1", [])).fetch(url)
        assert untrusted.error == "ssl_error" and "certificate verify failed" in untrusted.detail, untrusted
        assert server.hits["/jpg/a"] == 1
    finally:
        server.stop()


def test_a_tls_handshake_that_never_ends_is_cut_at_the_deadline():
    """A server that accepts and then says nothing: the TLS handshake waits for its hello."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        started = time.monotonic()
        fetched = fetcher(allow=ONLY_SERVER, timeout_s=1).fetch(f"https://127.0.0.1:{silent.getsockname()[1]}/a.jpg")
        assert fetched.error == "timeout" and "connecting" in fetched.detail, fetched
        assert 1 <= time.monotonic() - started < 2


def test_a_resolver_that_never_answers_is_cut_at_the_deadline():
    def stalled(host, port, *args):
        time.sleep(5)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    started = time.monotonic()
    fetched = fetcher(allow=ONLY_SERVER, timeout_s=1, resolve=stalled).fetch("http://slow-dns.example/a.jpg")
    assert fetched.error == "timeout" and "resolving slow-dns.example" in fetched.detail, fetched
    assert 1 <= time.monotonic() - started < 2
