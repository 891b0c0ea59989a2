"""`HttpImageProvider`: the Seedream / OpenAI-images-compatible upstream call of CONTRACT.md.

`POST {base}/images/generations` with a bearer key (and the request's `X-Request-Id`, which
upstreams ignore and logs and test fakes correlate by); the answer's `data[0]` holds `b64_json`,
or a `url` that is then fetched. Status codes map to the error classes: 408, 409, 425, 429 and
5xx, time-outs and connection errors may pass on a later attempt (`RetryableImageError`, with
`Retry-After` for 429 and 503); any other 4xx will not (`PermanentImageError`, carrying the
upstream's own message).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import json
import time
from typing import Any

import httpx

from service.images.base import GeneratedImage, ImageRequest
from service.images.errors import PermanentImageError, RetryableImageError

REQUEST_ID_HEADER = "X-Request-Id"  # carries `ImageRequest.request_id`, when it has one
RETRYABLE_STATUS = frozenset({408, 409, 425, 429})
RETRY_AFTER_STATUS = frozenset({429, 503})
MAX_RETRY_AFTER_S = 3600.0  # never wait longer than this, whatever the upstream says
MAX_ERROR_TEXT = 500  # characters of an upstream error body kept in messages


class HttpImageProvider:
    """Calls a Seedream-compatible image API through a shared `httpx.AsyncClient`.

    Args:
        client: the shared client (connection pool); its timeout is not used, see `timeout_s`.
        base_url: e.g. `https://ark.ap-southeast.bytepluses.com/api/v3`.
        api_key: sent as `Authorization: Bearer ...`.
        model: the `model` field of the request.
        timeout_s: the time limit of each upstream call (the generation, then the download).
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        base_url: str,
        api_key: str,
        model: str,
        timeout_s: float,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive seconds, e.g. 55")
        self._client = client
        self._endpoint = base_url.rstrip("/") + "/images/generations"
        self._api_key = api_key
        self._model = model
        self._timeout_s = timeout_s

    def request_body(self, request: ImageRequest) -> dict[str, Any]:
        """The JSON body sent upstream for `request`."""
        width, height = request.size
        body: dict[str, Any] = {
            "model": self._model,
            "prompt": request.prompt,
            "size": f"{width}x{height}",
            "response_format": "b64_json",
            "n": 1,
        }
        if request.reference_image_urls:
            body["image"] = request.reference_image_urls
        return body

    async def generate(self, request: ImageRequest) -> GeneratedImage:
        """Generate one image; raises `RetryableImageError` or `PermanentImageError`."""
        headers = {"Authorization": f"Bearer {self._api_key}"}
        if request.request_id:
            headers[REQUEST_ID_HEADER] = request.request_id
        response = await self._send(
            "POST", self._endpoint, json=self.request_body(request), headers=headers
        )
        _raise_for_status(response)
        try:
            item = response.json()["data"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            # A 200 that is not the documented shape: a proxy or an upstream hiccup.
            raise RetryableImageError(
                f"upstream answered 200 without data[0]: {_excerpt(response)}"
            ) from None
        if isinstance(item, dict) and isinstance(item.get("b64_json"), str):
            try:
                return GeneratedImage.from_bytes(base64.b64decode(item["b64_json"], validate=True))
            except binascii.Error:
                raise RetryableImageError("upstream sent invalid base64 in b64_json") from None
        if isinstance(item, dict) and isinstance(item.get("url"), str):
            return await self._download(item["url"])
        raise RetryableImageError("upstream answer has neither data[0].b64_json nor data[0].url")

    async def _download(self, url: str) -> GeneratedImage:
        if not url.startswith(("http://", "https://")):
            raise PermanentImageError(f"upstream gave a non-http image url: {url[:200]}")
        response = await self._send("GET", url)
        _raise_for_status(response)
        return GeneratedImage.from_bytes(response.content)

    async def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        # httpx's own timeouts bound each phase (connect, each read); the overall limit of one
        # call is ours, so an upstream that trickles bytes is cut off too.
        try:
            async with asyncio.timeout(self._timeout_s):
                return await self._client.request(
                    method, url, timeout=httpx.Timeout(self._timeout_s), **kwargs
                )
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise RetryableImageError(f"upstream timed out after {self._timeout_s:g}s") from exc
        except httpx.TransportError as exc:
            raise RetryableImageError(f"upstream unreachable: {type(exc).__name__}: {exc}") from exc


def _raise_for_status(response: httpx.Response) -> None:
    status = response.status_code
    if status < 400:
        return
    message = f"upstream {status}: {_upstream_message(response)}"
    if status in RETRYABLE_STATUS or status >= 500:
        retry_after = None
        if status in RETRY_AFTER_STATUS:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
        raise RetryableImageError(message, retry_after_s=retry_after)
    raise PermanentImageError(message)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = moment.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def _upstream_message(response: httpx.Response) -> str:
    """The upstream's own error message: OpenAI-style `error.message`, else the body's start."""
    try:
        body = response.json()
    except (ValueError, json.JSONDecodeError):
        return _excerpt(response)
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            code = error.get("code")
            text = error["message"][:MAX_ERROR_TEXT]
            return f"{text} ({code})" if isinstance(code, str) and code else text
        if isinstance(body.get("message"), str):
            return str(body["message"])[:MAX_ERROR_TEXT]
    return _excerpt(response)


def _excerpt(response: httpx.Response) -> str:
    text = response.text.strip()
    return text[:MAX_ERROR_TEXT] if text else "(empty body)"
