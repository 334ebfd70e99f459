"""The render work's pure parts: the SSRF decision (with an injected resolver: nothing is resolved or
connected), render input validation, HTML-to-text, the retry decisions; and the HTTP fallback against
pages on loopback addresses only (refused hops to non-loopback addresses: `test_render_netns.py`)."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.pages import JS_TEXT, page_server
from workers.protocol import ErrorKind
from workers.render.fetch import RefusedUrl, ResponseTooLarge, fetch_page
from workers.render.html_text import extract
from workers.render.main import RETRY_BACKOFF, should_retry, use_fallback
from workers.render.request import RenderRequest, parse_render_request
from workers.render.ssrf import address_refusal, check_url, check_url_offline


def resolver(table: dict[str, list[str]]):  # noqa: ANN201
    """A resolver over a fixed table; an unknown name fails like a DNS miss. Records its calls."""
    calls: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        if host not in table:
            raise OSError(f"unknown host {host}")
        return table[host]

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


def no_resolve(host: str, port: int) -> list[str]:
    raise AssertionError(f"the decision must not resolve {host}")


# ---- the SSRF decision ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url, why",
    [
        ("file:///etc/passwd", "only http and https"),
        ("ftp://example.org/", "only http and https"),
        ("gopher://example.org/", "only http and https"),
        ("javascript:alert(1)", "only http and https"),
        ("data:text/html,hi", "only http and https"),
        ("http://", "no host"),
        ("", "non-empty"),
        ("http://127.0.0.1/", "loopback"),
        ("http://127.1.2.3:8080/", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://[::]/", "unspecified"),
        ("http://10.0.0.1/", "private"),
        ("http://172.16.5.4/", "private"),
        ("http://192.168.1.1/", "private"),
        ("http://[fd12:3456::1]/", "private"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://169.254.10.10/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://[fd00:ec2::254]/", "metadata"),
        ("http://100.100.100.200/", "metadata"),
        ("http://100.64.0.1/", "not a public address"),
        ("http://224.0.0.1/", "multicast"),
        ("http://[ff02::1]/", "multicast"),
        ("http://240.0.0.1/", "not a public address"),
        ("http://255.255.255.255/", "not a public address"),
        ("http://[::ffff:10.0.0.1]/", "private"),
        ("http://[::ffff:169.254.169.254]/", "metadata"),
        ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
        ("http://metadata/", "metadata"),
        ("http://localhost:8000/", "loopback"),
        ("http://app.localhost/", "loopback"),
    ],
)
def test_refused_urls_with_the_allowlist_off(url: str, why: str) -> None:
    verdict = check_url(url, (), no_resolve)
    assert not verdict.allowed
    assert why in verdict.reason


@pytest.mark.parametrize(
    "addresses, why",
    [
        (["127.0.0.1"], "loopback"),
        (["10.1.2.3"], "private"),
        (["169.254.169.254"], "metadata"),
        (["fd00:ec2::254"], "metadata"),
        (["93.184.216.34", "192.168.0.10"], "private"),  # every resolved address must pass
        (["2606:2800:220:1::", "::1"], "loopback"),
    ],
)
def test_a_name_is_refused_when_any_of_its_addresses_is(addresses: list[str], why: str) -> None:
    resolve = resolver({"sneaky.example": addresses})
    verdict = check_url("https://sneaky.example/page", (), resolve)
    assert not verdict.allowed and why in verdict.reason
    assert resolve.calls == ["sneaky.example"]  # type: ignore[attr-defined]


def test_public_names_and_addresses_pass() -> None:
    resolve = resolver({"example.org": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]})
    verdict = check_url("https://example.org/a?b=c", (), resolve)
    assert verdict.allowed and verdict.addresses == ("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946")
    assert check_url("http://8.8.8.8/", (), no_resolve).allowed


def test_a_name_that_does_not_resolve_is_refused() -> None:
    verdict = check_url("http://nowhere.example/", (), resolver({}))
    assert not verdict.allowed and "cannot resolve nowhere.example" in verdict.reason
    assert not check_url("http://empty.example/", (), resolver({"empty.example": []})).allowed


def test_the_allowlist_opens_chosen_hosts_only() -> None:
    allow = ["127.0.0.1", "Intranet.Example"]
    assert check_url("http://127.0.0.1:8123/x", allow, no_resolve).allowed
    assert check_url("http://intranet.example/", allow, no_resolve).allowed
    assert not check_url("http://127.0.0.2/", allow, no_resolve).allowed
    assert not check_url("http://10.0.0.1/", allow, no_resolve).allowed
    assert not check_url("file:///etc/passwd", allow, no_resolve).allowed  # the scheme still counts


def test_address_refusal_and_the_offline_check() -> None:
    assert address_refusal("8.8.8.8") is None
    assert address_refusal("not-an-ip") is not None
    assert address_refusal("fe80::1%eth0") is not None  # a zone id does not hide link-local
    assert check_url_offline("https://example.org/").allowed  # names are checked again, resolved, later
    assert not check_url_offline("http://192.168.0.1/").allowed


# ---- inputs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "inputs, field",
    [
        ({"url": 5}, "inputs.url"),
        ({}, "inputs.url"),
        ({"url": "https://example.org/", "wait_until": "forever"}, "inputs.wait_until"),
        ({"url": "https://example.org/", "screenshot": "yes"}, "inputs.screenshot"),
        ({"url": "https://example.org/", "html": 1}, "inputs.html"),
        ({"url": "https://example.org/", "fallback": "ftp"}, "inputs.fallback"),
        ({"url": "https://example.org/", "engine": "curl"}, "inputs.engine"),
        ({"url": "https://example.org/", "timeout_s": 0}, "inputs.timeout_s"),
        ({"url": "https://example.org/", "timeout_s": True}, "inputs.timeout_s"),
        ({"url": "https://example.org/", "colour": "red"}, "unknown fields"),
        ({"url": "http://10.0.0.1/"}, "the URL is refused"),
        (["https://example.org/"], "inputs must be"),
    ],
)
def test_render_requests_name_the_field_at_fault(inputs: object, field: str) -> None:
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        parse_render_request(inputs)


def test_render_requests_fill_defaults() -> None:
    assert parse_render_request("https://example.org/") == RenderRequest(
        url="https://example.org/",
        wait_until="load",
        screenshot=False,
        html=False,
        engine="browser",
        fallback="http",
        timeout_s=None,
    )
    for wait_until in ("load", "domcontentloaded", "networkidle"):
        assert (
            parse_render_request({"url": "https://e.org/", "wait_until": wait_until}).wait_until == wait_until
        )
    assert (
        parse_render_request({"url": "http://127.0.0.1/", "fallback": None}, ["127.0.0.1"]).fallback is None
    )
    assert parse_render_request({"url": "https://e.org/", "timeout_s": 2}).timeout_s == 2.0


# ---- HTML to text, back-off ----------------------------------------------------------------------


def test_extract_title_text_and_absolute_links() -> None:
    page = extract(
        """<html><head><title> A  title </title><style>p {color: red}</style></head><body>
        <h1>Heading</h1><p>One &amp; two</p><script>var hidden = 1;</script>
        <a href="/b">b</a> <a href="c#frag">c</a> <a href="https://other.example/">o</a>
        <a href="javascript:void(0)">js</a> <a href="mailto:x@example.org">mail</a> <a href="/b">again</a>
        </body></html>""",
        "http://site.example/dir/page",
    )
    assert page["title"] == "A title"
    assert page["text"].splitlines()[:2] == ["Heading", "One & two"]
    assert "hidden" not in page["text"] and "color" not in page["text"]
    assert page["links"] == ["http://site.example/b", "http://site.example/dir/c", "https://other.example/"]


def test_retry_decisions() -> None:
    delays = [RETRY_BACKOFF.delay(failed) for failed in range(1, 9)]
    assert delays[:3] == [0.25, 0.5, 1.0] and max(delays) == 5.0 and delays == sorted(delays)
    assert should_retry(ErrorKind("timeout"), 1, 3) and should_retry(ErrorKind("failed"), 2, 3)
    assert not should_retry(ErrorKind("timeout"), 3, 3)  # out of tries
    assert not should_retry(ErrorKind("refused"), 1, 3) and not should_retry(
        ErrorKind("too_large"), 1, 3
    )  # same answer again
    assert use_fallback(ErrorKind("failed"), "http") and use_fallback(ErrorKind("timeout"), "http")
    assert not use_fallback(ErrorKind("failed"), None) and not use_fallback(ErrorKind("refused"), "http")


# ---- the HTTP fallback ---------------------------------------------------------------------------


def test_the_plain_fetch_sees_no_javascript_text_and_keeps_links_and_statuses() -> None:
    with page_server() as server:

        async def scenario() -> None:
            page = await fetch_page(f"{server.base}/js", ["127.0.0.1"], 10, 1 << 20, want_html=True)
            assert page["status"] == 200 and page["title"] == "JS page" and page["engine"] == "http"
            assert "static text" in page["text"] and JS_TEXT not in page["text"]
            assert JS_TEXT in page["html"]  # it is in the script, but no script ran
            missing = await fetch_page(f"{server.base}/nothing-here", ["127.0.0.1"], 10, 1 << 20)
            assert missing["status"] == 404 and missing["title"] == "Not found"
            links = await fetch_page(f"{server.base}/links?n=250", ["127.0.0.1"], 10, 1 << 20)
            assert len(links["links"]) == 250 and links["links"][0] == f"{server.base}/page/0"
            moved = await fetch_page(f"{server.base}/redirect?to=/js", ["127.0.0.1"], 10, 1 << 20)
            assert moved["final_url"] == f"{server.base}/js" and moved["title"] == "JS page"
            with pytest.raises(ResponseTooLarge):
                await fetch_page(f"{server.base}/big?kb=64", ["127.0.0.1"], 10, 16 * 1024)

        asyncio.run(scenario())


def test_the_plain_fetch_refuses_a_redirect_hop_before_connecting() -> None:
    """The allowlist holds 127.0.0.1; the page redirects to 127.0.0.2 (loopback too, so nothing could
    leave the machine even if the guard were broken), where a second server counts its requests."""
    with page_server() as server, page_server("127.0.0.2") as other:

        async def scenario() -> None:
            with pytest.raises(RefusedUrl, match="127.0.0.2"):
                await fetch_page(f"{server.base}/redirect?to={other.base}/js", ["127.0.0.1"], 5, 1 << 20)

        asyncio.run(scenario())
        assert server.served("/redirect") == 1 and other.requests == []
