"""Image providers: the local renderer, and the http client against httpx.MockTransport."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from PIL import Image

from service.images import (
    CharacterRef,
    HttpImageProvider,
    ImageRequest,
    LocalImageProvider,
    PermanentImageError,
    RetryableImageError,
)
from service.images.http import parse_retry_after
from tests.support.upstream import png_bytes

REQUEST = ImageRequest(
    shot_number=4,
    description="A chase across the rooftops",
    style="ink wash",
    aspect_ratio="9:16",
    characters=(
        CharacterRef("Ann", "a detective", "https://example.com/ann.png"),
        CharacterRef("Bo", "an informant"),
    ),
)


@pytest.mark.parametrize(
    ("ratio", "size"), [("16:9", (1280, 720)), ("9:16", (720, 1280)), ("1:1", (1024, 1024))]
)
async def test_local_provider_renders_a_png_of_the_ratio(ratio: str, size: tuple[int, int]) -> None:
    request = ImageRequest(shot_number=1, description="d " * 300, style="s", aspect_ratio=ratio)
    image = await LocalImageProvider().generate(request)
    assert image.content_type == "image/png" and image.extension == "png"
    assert Image.open(io.BytesIO(image.data)).size == size
    # Deterministic: the same request gives the same bytes.
    assert (await LocalImageProvider().generate(request)).data == image.data


def test_prompt_holds_style_shot_and_characters() -> None:
    prompt = REQUEST.prompt
    assert "ink wash" in prompt and "A chase across the rooftops" in prompt
    assert "Ann: a detective" in prompt and "Bo: an informant" in prompt
    assert REQUEST.reference_image_urls == ["https://example.com/ann.png"]


async def _resolve(host: str, port: int) -> list[str]:
    return ["93.184.216.34"]  # every host is a public one here (tests/service/test_upstream_*)


def _provider(
    handler: Callable[[httpx.Request], httpx.Response], timeout_s: float = 5
) -> HttpImageProvider:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return HttpImageProvider(
        client,
        base_url="https://upstream.test/api/v3/",
        api_key="k1",
        model="m1",
        timeout_s=timeout_s,
        resolve=_resolve,
    )


async def test_http_provider_sends_the_contract_request_and_decodes_b64() -> None:
    seen: list[httpx.Request] = []
    data = png_bytes(720, 1280)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"data": [{"b64_json": base64.b64encode(data).decode()}]})

    image = await _provider(handler).generate(REQUEST)
    assert image.data == data and image.content_type == "image/png"
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == "https://upstream.test/api/v3/images/generations"
    assert request.headers["authorization"] == "Bearer k1"
    body = json.loads(request.content)
    assert body == {
        "model": "m1",
        "prompt": REQUEST.prompt,
        "size": "720x1280",
        "response_format": "b64_json",
        "n": 1,
        "image": ["https://example.com/ann.png"],
    }


async def test_http_provider_fetches_url_answers_and_keeps_bytes_exactly() -> None:
    jpeg = b"\xff\xd8\xff\xe0" + b"exact bytes"

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/images/generations"):
            return httpx.Response(200, json={"data": [{"url": "https://cdn.test/i/1.jpeg"}]})
        # Sent to the address the host was checked at, naming the host in Host.
        assert str(request.url) == "https://93.184.216.34/i/1.jpeg"
        assert request.headers["host"] == "cdn.test"
        return httpx.Response(200, content=jpeg)

    image = await _provider(handler).generate(REQUEST)
    assert image.data == jpeg and image.extension == "jpg"


@pytest.mark.parametrize("status", [408, 409, 425, 429, 500, 502, 503, 504])
async def test_retryable_statuses(status: int) -> None:
    provider = _provider(lambda r: httpx.Response(status, json={"error": {"message": "busy"}}))
    with pytest.raises(RetryableImageError, match=f"upstream {status}: busy"):
        await provider.generate(REQUEST)


@pytest.mark.parametrize("status", [429, 503])
async def test_retry_after_is_passed_on(status: int) -> None:
    provider = _provider(lambda r: httpx.Response(status, headers={"Retry-After": "7"}))
    with pytest.raises(RetryableImageError) as caught:
        await provider.generate(REQUEST)
    assert caught.value.retry_after_s == 7


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_other_4xx_are_permanent_with_the_upstream_message(status: int) -> None:
    body = {"error": {"code": "OutputImageSensitiveContentDetected", "message": "content policy"}}
    provider = _provider(lambda r: httpx.Response(status, json=body))
    with pytest.raises(PermanentImageError, match="content policy") as caught:
        await provider.generate(REQUEST)
    assert "OutputImageSensitiveContentDetected" in str(caught.value)


async def test_connection_errors_and_timeouts_are_retryable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(RetryableImageError, match="unreachable"):
        await _provider(refuse).generate(REQUEST)

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with pytest.raises(RetryableImageError, match="timed out"):
        await _provider(slow).generate(REQUEST)


@pytest.mark.parametrize(
    "answer",
    [{}, {"data": []}, {"data": [{}]}, {"data": [{"b64_json": "***"}]}, ["x"]],
)
async def test_malformed_success_answers_are_retryable(answer: object) -> None:
    with pytest.raises(RetryableImageError):
        await _provider(lambda r: httpx.Response(200, json=answer)).generate(REQUEST)


def test_parse_retry_after() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after("garbage") is None
    assert parse_retry_after("2.5") == 2.5
    assert parse_retry_after("-3") == 0
    assert parse_retry_after("99999999") == 99999999  # the provider decides what is too long
    moment = datetime.now(UTC) + timedelta(seconds=30)
    parsed = parse_retry_after(format_datetime(moment, usegmt=True), now=moment.timestamp() - 30)
    assert parsed is not None and 29 <= parsed <= 31


def test_http_provider_checks_its_arguments() -> None:
    client = httpx.AsyncClient()
    with pytest.raises(ValueError, match="http"):
        HttpImageProvider(client, base_url="upstream.test", api_key="", model="", timeout_s=1)
    with pytest.raises(ValueError, match="positive"):
        HttpImageProvider(client, base_url="http://u.test", api_key="", model="", timeout_s=0)
