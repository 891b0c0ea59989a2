"""What the http provider accepts from the upstream (issue 8, points 1-4): only images, of a
bounded size, downloaded only from public http(s) addresses on every redirect hop, and a
`Retry-After` it can honour, against `httpx.MockTransport` and the fake upstream on loopback."""

from __future__ import annotations

import base64
import gzip
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from service.images import (
    HttpImageProvider,
    ImageRequest,
    PermanentImageError,
    RetryableImageError,
    create_provider,
)
from service.images.http import JSON_SLACK_BYTES, parse_retry_after
from service.settings import ServiceSettings
from tests.support.upstream import API_KEY, Answer, Call, FakeUpstream, png_bytes

REQUEST = ImageRequest(shot_number=1, description="a door opens", style="", aspect_ratio="1:1")
PNG = png_bytes(8, 8)
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF" + b"\0" * 16
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\0" * 16
HTML = b"<html><body>Service Unavailable</body></html>"
BASE = "https://upstream.test/api/v3"
# What the fake resolver answers for the hosts these tests name; any other host fails to resolve.
ADDRESSES = {
    "cdn.test": ["93.184.216.34"],
    "cdn2.test": ["2606:2800:220:1:248:1893:25c8:1946"],
    "internal.test": ["10.1.2.3"],
    "sneaky.test": ["93.184.216.34", "127.0.0.1"],
    "mapped.test": ["::ffff:127.0.0.1"],
}


async def _resolve(host: str, port: int) -> Sequence[str]:
    try:
        return ADDRESSES[host]
    except KeyError:
        raise OSError(f"cannot resolve {host}") from None


Handler = Callable[[httpx.Request], httpx.Response]


def _provider(handler: Handler, **options: object) -> HttpImageProvider:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    arguments: dict[str, object] = {"resolve": _resolve, **options}
    return HttpImageProvider(
        client, base_url=BASE, api_key="k", model="m", timeout_s=5, **arguments
    )  # type: ignore[arg-type]


def _b64(data: bytes) -> Handler:
    return lambda request: httpx.Response(
        200, json={"data": [{"b64_json": base64.b64encode(data).decode()}]}
    )


def _serving(files: dict[str, httpx.Response], seen: list[str]) -> Handler:
    """The generation answers a `url` of the first file; each GET answers its file."""
    first = next(iter(files))

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(200, json={"data": [{"url": first}]})
        # The provider connects to the address it checked: the URL as named is in Host.
        named = f"{request.url.scheme}://{request.headers['host']}{request.url.raw_path.decode()}"
        seen.append(named)
        return files[named]

    return handler


def _redirect(to: str, status: int = 302) -> httpx.Response:
    return httpx.Response(status, headers={"Location": to})


# 1. Only images are stored.


@pytest.mark.parametrize(
    ("data", "content_type", "extension"),
    [(PNG, "image/png", "png"), (JPEG, "image/jpeg", "jpg"), (WEBP, "image/webp", "webp")],
)
async def test_png_jpeg_and_webp_are_named_by_their_signature(
    data: bytes, content_type: str, extension: str
) -> None:
    image = await _provider(_b64(data)).generate(REQUEST)
    assert (image.data, image.content_type, image.extension) == (data, content_type, extension)


@pytest.mark.parametrize(
    "data", [HTML, b"GIF89a" + b"\0" * 16, b"RIFF\0\0\0\0WAVEfmt ", b"", b"\x89PNG"]
)
async def test_anything_else_in_b64_json_fails_the_attempt_retryably(data: bytes) -> None:
    with pytest.raises(RetryableImageError, match=r"upstream answer is not an image \(starts with"):
        await _provider(_b64(data)).generate(REQUEST)


async def test_an_html_download_is_not_stored() -> None:
    seen: list[str] = []
    handler = _serving({"https://cdn.test/1.png": httpx.Response(200, content=HTML)}, seen)
    with pytest.raises(RetryableImageError, match=r"not an image \(starts with b'<html>"):
        await _provider(handler).generate(REQUEST)
    assert seen == ["https://cdn.test/1.png"]


async def test_an_html_answer_from_the_fake_upstream_fails(upstream: FakeUpstream) -> None:
    upstream.script = lambda call: Answer(data=b"<!doctype html><title>hi</title>")
    async with httpx.AsyncClient() as client:
        provider = HttpImageProvider(
            client, base_url=upstream.base_url, api_key=API_KEY, model="m", timeout_s=5
        )
        with pytest.raises(RetryableImageError, match=r"starts with b'<!doctype html>"):
            await provider.generate(REQUEST)


# 2. Bounded size.


async def test_a_b64_image_over_the_limit_fails_before_it_is_decoded() -> None:
    data = PNG + b"\0" * 4000
    with pytest.raises(RetryableImageError, match="larger than IMAGE_MAX_BYTES"):
        await _provider(_b64(data), max_bytes=1000).generate(REQUEST)
    # At the limit exactly it passes: the 4/3 rule must not refuse a legal image.
    image = await _provider(_b64(data), max_bytes=len(data)).generate(REQUEST)
    assert image.data == data
    with pytest.raises(RetryableImageError, match="larger than IMAGE_MAX_BYTES"):
        await _provider(_b64(data), max_bytes=len(data) - 1).generate(REQUEST)


class _Endless(httpx.AsyncByteStream):
    """A body that never ends; counts the chunks read from it."""

    def __init__(self, chunk: bytes) -> None:
        self.chunk = chunk
        self.read = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            self.read += 1
            yield self.chunk


async def test_a_download_with_a_content_length_over_the_limit_is_not_read() -> None:
    body = _Endless(PNG)
    answer = httpx.Response(200, headers={"Content-Length": str(10**12)}, stream=body)
    handler = _serving({"https://cdn.test/1.png": answer}, [])
    with pytest.raises(RetryableImageError, match="larger than IMAGE_MAX_BYTES"):
        await _provider(handler, max_bytes=10_000).generate(REQUEST)
    assert body.read == 0


async def test_a_streamed_download_stops_at_the_limit() -> None:
    body = _Endless(PNG + b"\0" * 1000)
    handler = _serving({"https://cdn.test/1.png": httpx.Response(200, stream=body)}, [])
    with pytest.raises(RetryableImageError, match="larger than IMAGE_MAX_BYTES"):
        await _provider(handler, max_bytes=10_000).generate(REQUEST)
    assert body.read <= 10_000 // len(body.chunk) + 2


async def test_a_streamed_generation_answer_stops_at_the_limit() -> None:
    body = _Endless(b'{"data": [{"b64_json": "' + b"A" * 1000)
    provider = _provider(lambda request: httpx.Response(200, stream=body), max_bytes=10_000)
    with pytest.raises(RetryableImageError, match="larger than IMAGE_MAX_BYTES"):
        await provider.generate(REQUEST)
    # What the JSON around the base64 may add is allowed on top of the encoded bound.
    assert body.read <= (4 * math.ceil(10_000 / 3) + JSON_SLACK_BYTES) // len(body.chunk) + 2


def test_the_limit_comes_from_the_settings() -> None:
    settings = ServiceSettings(image_provider="http", image_api_base=BASE, image_max_bytes=123)
    provider = create_provider(settings, httpx.AsyncClient())
    assert isinstance(provider, HttpImageProvider) and provider.max_bytes == 123
    with pytest.raises(ValueError, match="max_bytes"):
        _provider(_b64(PNG), max_bytes=0)


# 3. Where a `url` answer may be fetched from.


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://127.0.0.1:8080/admin", "loopback"),
        ("http://[::1]/x.png", "loopback"),
        ("http://10.0.0.7/x.png", "private"),
        ("http://192.168.1.1/x.png", "private"),
        ("http://224.0.0.1/x.png", "multicast"),
        ("http://240.0.0.1/x.png", "reserved"),
        ("http://0.0.0.0/x.png", "unspecified"),
        ("https://internal.test/x.png", "private"),
        ("https://sneaky.test/x.png", "loopback"),
        ("https://mapped.test/x.png", "loopback"),
    ],
)
async def test_a_url_on_a_non_public_address_is_refused_before_any_request(
    url: str, reason: str
) -> None:
    seen: list[str] = []
    handler = _serving({url: httpx.Response(200, content=PNG)}, seen)
    with pytest.raises(PermanentImageError, match=f"refused.*{reason}"):
        await _provider(handler).generate(REQUEST)
    assert seen == []


@pytest.mark.parametrize(
    "url", ["ftp://cdn.test/x.png", "file:///etc/passwd", "gopher://cdn.test/", "//cdn.test/x"]
)
async def test_a_url_that_is_not_http_is_refused(url: str) -> None:
    handler = _serving({url: httpx.Response(200, content=PNG)}, [])
    with pytest.raises(PermanentImageError, match="http"):
        await _provider(handler).generate(REQUEST)


async def test_every_redirect_hop_is_checked() -> None:
    seen: list[str] = []
    files = {
        "https://cdn.test/1.png": _redirect("https://cdn2.test/2.png", 301),
        "https://cdn2.test/2.png": _redirect("/3.png", 307),  # relative: same host
        "https://cdn2.test/3.png": _redirect("http://169.254.169.254/latest/meta-data/"),
        "http://169.254.169.254/latest/meta-data/": httpx.Response(200, content=PNG),
    }
    with pytest.raises(PermanentImageError, match=r"169\.254\.169\.254.*link-local"):
        await _provider(_serving(files, seen)).generate(REQUEST)
    assert seen == ["https://cdn.test/1.png", "https://cdn2.test/2.png", "https://cdn2.test/3.png"]


async def test_a_redirect_to_another_scheme_is_refused() -> None:
    files = {"https://cdn.test/1.png": _redirect("file:///etc/passwd")}
    with pytest.raises(PermanentImageError, match="http"):
        await _provider(_serving(files, [])).generate(REQUEST)


async def test_redirects_to_public_hosts_are_followed_and_bytes_kept() -> None:
    seen: list[str] = []
    files = {
        "https://cdn.test/1.png": _redirect("https://cdn2.test/final.webp", 308),
        "https://cdn2.test/final.webp": httpx.Response(200, content=WEBP),
    }
    image = await _provider(_serving(files, seen)).generate(REQUEST)
    assert image.data == WEBP and image.extension == "webp"
    assert seen == ["https://cdn.test/1.png", "https://cdn2.test/final.webp"]


async def test_the_download_connects_to_the_address_it_checked() -> None:
    """No second lookup between the check and the connection (DNS rebinding): the request goes
    to the checked address, naming the host in `Host` and, over TLS, in SNI."""
    requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(200, json={"data": [{"url": "https://cdn2.test:8443/a.png"}]})
        requests.append(request)
        return httpx.Response(200, content=PNG)

    assert (await _provider(handler).generate(REQUEST)).data == PNG
    (request,) = requests
    assert request.url.host == ADDRESSES["cdn2.test"][0] and request.url.port == 8443
    assert request.headers["host"] == "cdn2.test:8443"
    assert request.extensions["sni_hostname"] == "cdn2.test"


async def test_a_redirect_loop_stops_after_a_few_hops() -> None:
    seen: list[str] = []
    files = {"https://cdn.test/1.png": _redirect("https://cdn.test/1.png")}
    with pytest.raises(RetryableImageError, match="redirect"):
        await _provider(_serving(files, seen)).generate(REQUEST)
    assert 2 <= len(seen) <= 10


async def test_a_host_that_does_not_resolve_is_retryable() -> None:
    files = {"https://nowhere.test/1.png": httpx.Response(200, content=PNG)}
    with pytest.raises(RetryableImageError, match="resolve"):
        await _provider(_serving(files, [])).generate(REQUEST)


@pytest.fixture
async def loopback_client() -> AsyncIterator[httpx.AsyncClient]:
    # The worker's client follows redirects by default: the provider must not rely on it.
    async with httpx.AsyncClient(follow_redirects=True) as client:
        yield client


def _fake_provider(client: httpx.AsyncClient, upstream: FakeUpstream) -> HttpImageProvider:
    return HttpImageProvider(
        client, base_url=upstream.base_url, api_key=API_KEY, model="m", timeout_s=5
    )


async def test_the_api_host_may_be_loopback_but_no_other_loopback_name(
    upstream: FakeUpstream, loopback_client: httpx.AsyncClient
) -> None:
    """The fake runs on 127.0.0.1, the host `IMAGE_API_BASE` names: its files are fetched, also
    through its own redirects; `localhost`, the same server by another name, is refused."""
    own = upstream.add_file("own.png", PNG)
    by_name = own.replace("127.0.0.1", "localhost")
    answers = iter(
        [own, upstream.redirect_url(own, hops=2), by_name, upstream.redirect_url(by_name)]
    )

    def script(call: Call) -> Answer:
        return Answer(image="url", url=next(answers))

    upstream.script = script
    provider = _fake_provider(loopback_client, upstream)
    assert (await provider.generate(REQUEST)).data == PNG
    assert (await provider.generate(REQUEST)).data == PNG
    for _ in range(2):
        with pytest.raises(PermanentImageError, match=r"localhost.*loopback"):
            await provider.generate(REQUEST)


# 4. Retry-After as an HTTP date.


@pytest.fixture
def new_york(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        yield
    finally:
        monkeypatch.undo()
        time.tzset()


def test_a_retry_after_date_without_a_zone_is_utc(new_york: None) -> None:
    assert time.timezone != 0  # the process really is away from UTC
    now = time.time()
    ahead = now + 600
    asctime = time.strftime("%a %b %d %H:%M:%S %Y", time.gmtime(ahead))
    minus_zero = format_datetime(datetime.fromtimestamp(ahead, UTC).replace(tzinfo=None))
    assert minus_zero.endswith("-0000")
    gmt = format_datetime(datetime.fromtimestamp(ahead, UTC), usegmt=True)
    for value in (asctime, minus_zero, gmt):
        parsed = parse_retry_after(value, now=now)
        assert parsed is not None and 598 <= parsed <= 601, value


def test_parse_retry_after_reads_the_header_as_sent() -> None:
    assert parse_retry_after("99999999") == 99999999
    assert parse_retry_after("inf") is None and parse_retry_after("nan") is None
    assert parse_retry_after("-3") == 0


def _http_settings(**values: object) -> ServiceSettings:
    return ServiceSettings(image_provider="http", image_api_base=BASE, **values)  # type: ignore[arg-type]


@pytest.mark.parametrize("retry_after", ["901", "in 15 minutes"])
async def test_a_retry_after_longer_than_a_storyboard_waits_fails_for_good(
    retry_after: str,
) -> None:
    if retry_after == "in 15 minutes":
        moment = datetime.now(UTC) + timedelta(seconds=901)
        retry_after = format_datetime(moment, usegmt=True)
    handler = lambda request: httpx.Response(429, headers={"Retry-After": retry_after})  # noqa: E731
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    provider = create_provider(_http_settings(storyboard_timeout_s=600), client)
    with pytest.raises(
        PermanentImageError, match=r"upstream asked to retry after 90\d s"
    ) as caught:
        await provider.generate(REQUEST)
    assert "STORYBOARD_TIMEOUT_S" in str(caught.value)


async def test_a_retry_after_a_storyboard_can_wait_is_honoured() -> None:
    handler = lambda request: httpx.Response(503, headers={"Retry-After": "240"})  # noqa: E731
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    provider = create_provider(_http_settings(storyboard_timeout_s=300), client)
    with pytest.raises(RetryableImageError) as caught:
        await provider.generate(REQUEST)
    assert caught.value.retry_after_s == 240


async def test_a_compressed_answer_is_refused_before_it_is_inflated() -> None:
    # We ask for identity; a gzip body could inflate a thousandfold before any count saw it.
    body = gzip.compress(b'{"data": [{"b64_json": "' + b"A" * 1_000_000 + b'"}]}')

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["Accept-Encoding"] == "identity"
        return httpx.Response(200, content=body, headers={"Content-Encoding": "gzip"})

    with pytest.raises(RetryableImageError, match="gzip-encoded although identity"):
        await _provider(handler).generate(REQUEST)
