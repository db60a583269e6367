"""Safe outbound calls: non-public addresses refused in any notation (unless a setting allows a network), checked at
creation and again at delivery, the connection made to the checked address (no DNS rebinding) with the name in the
Host header and in TLS's SNI, https only in production, and at most a few KB of the answer read."""

from __future__ import annotations

import socket
import threading

import pytest

from apps.webhooks import outbound, services
from apps.webhooks.models import WebhookDelivery
from tests.webhooks.conftest import LOOPBACK_ONLY

NEVER_ALLOWED = [
    ("http://169.254.169.254/latest/meta-data/", "link-local"),  # cloud metadata
    ("http://0251.0376.0251.0376/", "link-local"),  # the same, in octal
    ("http://0xa9fea9fe/", "link-local"),  # ... and in hex
    ("http://10.0.0.1/", "private"),
    ("http://172.16.5.4:8080/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://0.0.0.0/", "unspecified"),
    ("http://0/", "unspecified"),
    ("http://224.0.0.1/", "multicast"),
    ("http://240.0.0.1/", "reserved"),
    ("http://100.64.0.1/", "not a public address"),  # shared address space (carrier-grade NAT)
    ("http://[fe80::1]/", "link-local"),
    ("http://[fc00::1]/", "private"),
    ("http://[::ffff:169.254.169.254]/", "IPv4-mapped"),
    ("http://[::ffff:127.0.0.1]/", "IPv4-mapped"),  # mapped loopback: refused even with 127.0.0.0/8 allowed
    ("http://[::ffff:7f00:1]/", "IPv4-mapped"),
    ("http://[::127.0.0.1]/", "IPv4-compatible"),
    ("http://[2002:7f00:1::]/", "carries an IPv4"),  # 6to4 around 127.0.0.1
    ("http://[64:ff9b::a9fe:a9fe]/", "carries an IPv4"),  # NAT64 around 169.254.169.254
]
LOOPBACK = [
    "http://127.0.0.1/", "http://2130706433/", "http://0177.0.0.1/", "http://0x7f000001/", "http://0x7f.1/", "http://127.1/",
    "http://017700000001/", "http://localhost/", "http://[::1]/", "http://[0:0:0:0:0:0:0:1]/",
]


@pytest.mark.parametrize("url,why", NEVER_ALLOWED)
def test_non_public_addresses_are_refused_in_any_notation_even_with_loopback_allowed(url, why):
    with pytest.raises(outbound.UnsafeURL) as refused:
        outbound.url_check(url, allow_http=True, allowed_networks=LOOPBACK_ONLY)
    assert why in refused.value.message and refused.value.param == "url"


@pytest.mark.parametrize("url", LOOPBACK)
def test_loopback_in_any_notation_is_refused_unless_a_setting_allows_it(url):
    with pytest.raises(outbound.UnsafeURL, match="loopback"):
        outbound.url_check(url, allow_http=True)
    allowed = (*LOOPBACK_ONLY, "::1/128")
    target = outbound.url_check(url, allow_http=True, allowed_networks=allowed)
    assert all(a in ("127.0.0.1", "::1") for a in target.addresses)


@pytest.mark.parametrize("url,message", [
    ("ftp://example.com/", "must start with https://"),
    ("file:///etc/passwd", "must start with https://"),
    ("gopher://127.0.0.1:6379/", "must start with https://"),
    ("http://93.184.215.14/", "must use https://"),  # production: https only
    ("https://user:pass@93.184.215.14/", "user name or password"),
    ("https:///nohost", "no host"),
    ("https://93.184.215.14:99999/", "not valid"),
    ("https://no-such-host.invalid/", "could not be resolved"),
])
def test_other_bad_urls_are_refused_with_a_clear_message(url, message):
    with pytest.raises(outbound.UnsafeURL, match=message):
        outbound.url_check(url, allow_http=False)


def test_a_public_address_is_accepted_and_keeps_its_path_port_and_host():
    target = outbound.url_check("https://93.184.215.14:8443/hooks?a=1#frag", allow_http=False)
    assert (target.scheme, target.host, target.port, target.path, target.addresses) == (
        "https", "93.184.215.14", 8443, "/hooks?a=1", ("93.184.215.14",))
    assert target.host_header == "93.184.215.14:8443"


def test_the_api_refuses_metadata_and_loopback_urls_with_a_400(client, user, settings):
    from apps.accounts.services import api_key_create

    settings.WEBHOOK_ALLOW_HTTP = True
    key = api_key_create(user=user, name="k")[1]
    for url, words in [("http://169.254.169.254/", "link-local"), ("http://2130706433/", "loopback"),
                       ("http://[::ffff:127.0.0.1]:8000/", "IPv4-mapped"), ("ftp://x.example/", "https://")]:
        response = client.post("/api/v1/webhooks/", {"url": url}, content_type="application/json",
                               HTTP_AUTHORIZATION=f"Bearer {key}")
        assert response.status_code == 400, (url, response.content)
        error = response.json()["error"]
        assert words in error["message"] and error["param"] == "url" and error["code"] == "invalid_url"
    settings.WEBHOOK_ALLOW_HTTP = False
    response = client.post("/api/v1/webhooks/", {"url": "http://93.184.215.14/"}, content_type="application/json",
                           HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 400 and "must use https://" in response.json()["error"]["message"]


def fake_dns(monkeypatch, answers: dict[str, list[str]]):
    """The resolver's answers for names of the test (what a hostile DNS server could say); others as usual."""
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in answers:
            return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in answers[host]]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(outbound.socket, "getaddrinfo", getaddrinfo)


def test_the_url_is_checked_again_at_delivery_a_rebound_name_is_not_called(transactional_db, user, receiver, hooks_allowed,
                                                                            monkeypatch, settings):
    settings.WEBHOOK_ALLOWED_NETWORKS = []
    fake_dns(monkeypatch, {"hooks.example.test": ["93.184.215.14"]})
    endpoint, _ = services.webhook_endpoint_create(owner=user, url="http://hooks.example.test/in")
    fake_dns(monkeypatch, {"hooks.example.test": ["93.184.215.14", "169.254.169.254"]})  # the name now points inside
    [delivery] = services.webhook_event_send(owner_id=user.pk, event_type="fine_tuning.job.failed", data={"id": "x"}, created_at=1)
    attempt = services.webhook_delivery_attempt(delivery_id=delivery.pk)
    assert attempt.status_code is None
    assert attempt.error == ("Not sent: The URL's host is a link-local address (hooks.example.test resolves to 169.254.169.254); "
                             "webhooks go to public addresses only.")
    assert WebhookDelivery.objects.get(pk=delivery.pk).status == "pending"  # the endpoint's fault: retried, counted
    endpoint.refresh_from_db()
    assert endpoint.consecutive_failures == 1


def test_the_connection_goes_to_the_checked_address_with_the_name_in_the_host_header(receiver, monkeypatch):
    fake_dns(monkeypatch, {"hooks.example.test": ["127.0.0.1"]})
    target = outbound.url_check(f"http://hooks.example.test:{receiver.port}/in?x=1", allow_http=True,
                                allowed_networks=LOOPBACK_ONLY)
    # Whatever the name resolves to afterwards, the call goes to the address that was checked.
    fake_dns(monkeypatch, {"hooks.example.test": ["169.254.169.254"]})
    answer = outbound.post(target, b"{}", {"Content-Type": "application/json"}, timeout=5, max_bytes=100)
    assert answer.status == 200
    [got] = receiver.received
    assert got.headers["host"] == f"hooks.example.test:{receiver.port}" and got.path == "/in?x=1" and got.body == b"{}"


def test_https_connects_to_the_checked_address_and_names_the_host_for_sni(monkeypatch):
    """A TLS ClientHello carries the server name in clear: a listener on the checked address reads it."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    hello = {}

    def accept():
        conn, _ = listener.accept()
        with conn:
            hello["bytes"] = conn.recv(4096)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    fake_dns(monkeypatch, {"secure.example.test": ["127.0.0.1"]})
    target = outbound.url_check(f"https://secure.example.test:{port}/", allow_http=False, allowed_networks=LOOPBACK_ONLY)
    with pytest.raises(OSError):  # no TLS answer: the listener hangs up
        outbound.post(target, b"{}", {}, timeout=5, max_bytes=100)
    thread.join(5)
    listener.close()
    assert hello["bytes"][:1] == b"\x16" and b"secure.example.test" in hello["bytes"]  # a handshake, with SNI


def test_at_most_max_bytes_of_the_answer_are_read(receiver):
    receiver.answer = b"x" * 1_000_000
    target = outbound.url_check(receiver.url, allow_http=True, allowed_networks=LOOPBACK_ONLY)
    answer = outbound.post(target, b"{}", {}, timeout=5, max_bytes=4096)
    assert answer.status == 200 and answer.body == b"x" * 4096

