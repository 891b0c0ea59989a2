"""`HttpImageProvider`: the Seedream / OpenAI-images-compatible upstream call of CONTRACT.md.

`POST {base}/images/generations` with a bearer key (and the request's `X-Request-Id`, which
upstreams ignore and logs and test fakes correlate by); the answer's `data[0]` holds `b64_json`,
or a `url` that is then fetched.

The same `request_id` goes out as the `Idempotency-Key` header: the service names it after the
generation (`storyboard-<project>-<shot>-<job>`, one job per generation), so every retry and
every re-claim of one generation sends the same key and a regenerate a new one, and an upstream
that honours the header charges one generation once however often it is asked (a call while
another with its key is in progress answers 409, which is retryable).

Status codes map to the error classes: 408, 409, 425, 429 and 5xx, time-outs and connection
errors may pass on a later attempt (`RetryableImageError`, with `Retry-After` for 429 and 503);
any other 4xx will not (`PermanentImageError`, carrying the upstream's own message).

What is accepted from the upstream is bounded: only PNG, JPEG or WebP bytes (by signature),
at most `max_bytes` of them (`IMAGE_MAX_BYTES`), read as a stream with a running count; a
`url` is fetched only over http(s), following at most `MAX_REDIRECTS` redirects itself, and
each hop only from a public address (or the host the base URL names); a `Retry-After` longer
than a storyboard waits fails the shot for good.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import email.utils
import ipaddress
import json
import math
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC
from typing import Any

import httpx

from service.images.base import SIGNATURE_EXCERPT_BYTES, GeneratedImage, ImageRequest
from service.images.errors import PermanentImageError, RetryableImageError

REQUEST_ID_HEADER = "X-Request-Id"  # carries `ImageRequest.request_id`, when it has one
IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"  # the same value: a generation's, over its attempts
RETRYABLE_STATUS = frozenset({408, 409, 425, 429})
RETRY_AFTER_STATUS = frozenset({429, 503})
MAX_RETRY_AFTER_S = 3600.0  # the longest wait honoured when the caller names no limit
MAX_ERROR_TEXT = 500  # characters of an upstream error body kept in messages
DEFAULT_MAX_BYTES = 20 * 1024 * 1024  # IMAGE_MAX_BYTES's default
MAX_REDIRECTS = 5  # hops a `url` download may take, each one checked
JSON_SLACK_BYTES = 64 * 1024  # what a `b64_json` answer may hold besides the base64 itself
ERROR_BODY_BYTES = 64 * 1024  # read of an error answer, for its message
# Ask for the bytes as they are: the running count is of decoded bytes either way, but one
# compressed chunk of a hostile gzip body could inflate far beyond its size in one step.
IDENTITY = {"Accept-Encoding": "identity"}

# host, port -> the IP addresses it resolves to; the default asks the event loop's resolver.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]


async def resolve_host(host: str, port: int) -> list[str]:
    """The addresses `host` resolves to (`loop.getaddrinfo`); raises `OSError` when none."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class HttpImageProvider:
    """Calls a Seedream-compatible image API through a shared `httpx.AsyncClient`.

    Args:
        client: the shared client (connection pool); its timeout and redirect setting are not
            used: see `timeout_s`, and redirects are followed here, hop by hop.
        base_url: e.g. `https://ark.ap-southeast.bytepluses.com/api/v3`; its host is the one
            a `url` answer may name even when it is not a public address (a local fake).
        api_key: sent as `Authorization: Bearer ...`.
        model: the `model` field of the request.
        timeout_s: the time limit of each upstream call (the generation, then the download
            with all its redirects).
        max_bytes: the largest image accepted (`IMAGE_MAX_BYTES`), decoded or downloaded.
        max_retry_after_s: the longest `Retry-After` worth waiting for (the storyboard's own
            limit, `STORYBOARD_TIMEOUT_S`); a longer one fails the shot for good.
        resolve: how hosts are resolved before each download hop (tests name their own).
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        base_url: str,
        api_key: str,
        model: str,
        timeout_s: float,
        max_bytes: int = DEFAULT_MAX_BYTES,
        max_retry_after_s: float = MAX_RETRY_AFTER_S,
        resolve: Resolver = resolve_host,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive seconds, e.g. 55")
        if max_bytes <= 0:
            raise ValueError("max_bytes must be a positive number of bytes, e.g. 20971520")
        if max_retry_after_s < 0:
            raise ValueError("max_retry_after_s must be >= 0 seconds, e.g. 300")
        self._client = client
        self._endpoint = base_url.rstrip("/") + "/images/generations"
        self._api_host = httpx.URL(base_url).host.lower()
        self._api_key = api_key
        self._model = model
        self._timeout_s = timeout_s
        self._max_bytes = max_bytes
        # Base64 takes 4 characters per 3 bytes: checking the encoded length bounds the
        # decoded size before any decoding is paid for.
        self._max_encoded = 4 * math.ceil(max_bytes / 3)
        self._max_retry_after_s = max_retry_after_s
        self._resolve = resolve

    @property
    def max_bytes(self) -> int:
        """The largest image accepted, in bytes."""
        return self._max_bytes

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
        headers = {"Authorization": f"Bearer {self._api_key}", **IDENTITY}
        if request.request_id:
            headers[REQUEST_ID_HEADER] = request.request_id
            # The generation's identity, stable over its attempts: what makes a retry free.
            headers[IDEMPOTENCY_KEY_HEADER] = request.request_id
        async with self._time_limit():
            response, body = await self._exchange(
                "POST",
                httpx.URL(self._endpoint),
                limit=self._max_encoded + JSON_SLACK_BYTES,
                json=self.request_body(request),
                headers=headers,
            )
        if response.is_redirect:
            raise RetryableImageError(
                f"upstream answered {response.status_code} to the generation (not followed)"
            )
        try:
            item = json.loads(body)["data"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            # A 200 that is not the documented shape: a proxy or an upstream hiccup.
            raise RetryableImageError(
                f"upstream answered 200 without data[0]: {_excerpt(body)}"
            ) from None
        del body  # the parsed answer holds the base64; the raw body need not stay alive
        if isinstance(item, dict) and isinstance(item.get("b64_json"), str):
            return self._decode(item.pop("b64_json"))
        if isinstance(item, dict) and isinstance(item.get("url"), str):
            return await self._download(item["url"])
        raise RetryableImageError("upstream answer has neither data[0].b64_json nor data[0].url")

    def _decode(self, encoded: str) -> GeneratedImage:
        if len(encoded) > self._max_encoded:
            raise _too_large(self._max_bytes, "answer")
        try:
            # strict_mode: only the alphabet and correct padding; and, unlike b64decode, no
            # ASCII copy of the whole string first.
            data = binascii.a2b_base64(encoded, strict_mode=True)
        except (binascii.Error, ValueError):
            raise RetryableImageError("upstream sent invalid base64 in b64_json") from None
        if len(data) > self._max_bytes:  # the 4/3 bound allows up to two bytes of slack
            raise _too_large(self._max_bytes, "answer")
        return _image(data)

    async def _download(self, url: str) -> GeneratedImage:
        target = _parse_url(url)
        async with self._time_limit():
            for _ in range(MAX_REDIRECTS + 1):
                # Checked before every hop: a public CDN may redirect to a private address.
                address = await self._check_destination(target)
                hop, headers = target, dict(IDENTITY)
                extensions: dict[str, Any] = {}
                if address is not None:
                    # Connect to the address just checked, not to whatever a second lookup
                    # answers (DNS rebinding); the host still names itself in Host and in TLS.
                    hop = target.copy_with(host=address)
                    headers["Host"] = target.netloc.decode("ascii")
                    if target.scheme == "https":
                        extensions["sni_hostname"] = target.host
                response, data = await self._exchange(
                    "GET", hop, limit=self._max_bytes, headers=headers, extensions=extensions
                )
                if not response.is_redirect:
                    return _image(data)
                target = _parse_url(response.headers["Location"], base=target)
        raise RetryableImageError(f"upstream image url redirected more than {MAX_REDIRECTS} times")

    async def _check_destination(self, url: httpx.URL) -> str | None:
        """Refuse a URL that is not http(s) or whose host resolves to a non-public address.

        Returns:
            The checked address to connect to; None for `IMAGE_API_BASE`'s host, which is
            connected to as named.

        The refusal is permanent: the upstream chose that address, and another attempt would
        pay for a new generation only for its answer to be refused the same way. A host that
        does not resolve may be a passing DNS failure: that one is retryable.

        """
        if url.scheme not in ("http", "https") or not url.host:
            raise PermanentImageError(
                f"refused to fetch the image from {str(url)[:200]}: only http(s) URLs are fetched"
            )
        host = url.host.lower()
        if host == self._api_host:
            return None  # the operator named this host: a local or in-cluster upstream is fine
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            ipaddress.ip_address(host)
            addresses: Sequence[str] = [host]  # a literal address: nothing to resolve
        except ValueError:
            try:
                addresses = await self._resolve(host, port)
            except OSError as exc:
                raise RetryableImageError(f"could not resolve image host {host}: {exc}") from exc
        if not addresses:
            raise RetryableImageError(f"could not resolve image host {host}: no address")
        for address in addresses:
            reason = non_public_reason(address)
            if reason is not None:
                raise PermanentImageError(
                    f"refused to fetch the image from {host}: {address} is a {reason} address"
                )
        return addresses[0]

    async def _exchange(
        self, method: str, url: httpx.URL, *, limit: int, **kwargs: Any
    ) -> tuple[httpx.Response, bytes]:
        """One request, redirects not followed: the response and its body, read to `limit`."""
        async with self._client.stream(
            method, url, follow_redirects=False, timeout=httpx.Timeout(self._timeout_s), **kwargs
        ) as response:
            if response.is_redirect:
                return response, b""
            if response.status_code >= 400:
                body = await _read(response, ERROR_BODY_BYTES, truncate=True)
                self._raise_for_status(response, body)
            return response, await _read(response, limit)

    @contextlib.asynccontextmanager
    async def _time_limit(self) -> AsyncIterator[None]:
        # httpx's own timeouts bound each phase (connect, each read); the overall limit of one
        # call is ours, so an upstream that trickles bytes is cut off too.
        try:
            async with asyncio.timeout(self._timeout_s):
                yield
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise RetryableImageError(
                f"upstream timed out after {self._timeout_s:g}s", unreachable=True
            ) from exc
        except httpx.TransportError as exc:
            raise RetryableImageError(
                f"upstream unreachable: {type(exc).__name__}: {exc}", unreachable=True
            ) from exc
        except httpx.DecodingError as exc:
            raise RetryableImageError(f"upstream sent an undecodable body: {exc}") from exc

    def _raise_for_status(self, response: httpx.Response, body: bytes) -> None:
        status = response.status_code
        message = f"upstream {status}: {_upstream_message(body)}"
        if status in RETRYABLE_STATUS or status >= 500:
            retry_after = None
            if status in RETRY_AFTER_STATUS:
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            if retry_after is not None and retry_after > self._max_retry_after_s:
                # Waiting that long would leave the storyboard `generating` past its own limit.
                raise PermanentImageError(
                    f"{message}; the upstream asked to retry after {math.ceil(retry_after)} s, "
                    f"longer than a storyboard waits "
                    f"(STORYBOARD_TIMEOUT_S={self._max_retry_after_s:g} s)"
                )
            raise RetryableImageError(message, retry_after_s=retry_after, status=status)
        raise PermanentImageError(message)


async def _read(response: httpx.Response, limit: int, *, truncate: bool = False) -> bytes:
    """The body of `response`, `Content-Length` checked first, then counted as it streams.

    Args:
        response: an open streamed response.
        limit: the most bytes accepted.
        truncate: keep the first `limit` bytes and stop (an error body), instead of raising.
    """
    declared = response.headers.get("Content-Length", "")
    if not truncate and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit, "answer")
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        # We asked for identity. A compressed body would be inflated chunk by chunk before any
        # count could see it: one small gzip chunk can inflate a thousandfold.
        raise RetryableImageError(
            f"upstream answer is {encoding}-encoded although identity was asked for"
        )
    buffer = bytearray()
    async for chunk in response.aiter_bytes():
        if len(buffer) + len(chunk) > limit:
            if truncate:
                buffer += chunk[: limit - len(buffer)]
                break
            raise _too_large(limit, "answer")
        buffer += chunk
    return bytes(buffer)


def _too_large(limit: int, what: str) -> RetryableImageError:
    return RetryableImageError(
        f"upstream {what} is larger than IMAGE_MAX_BYTES allows ({limit} bytes)"
    )


def _image(data: bytes) -> GeneratedImage:
    try:
        return GeneratedImage.from_bytes(data)
    except ValueError:
        # An error page served with a 200, a proxy's notice: never stored, maybe next time.
        raise RetryableImageError(
            f"upstream answer is not an image (starts with {data[:SIGNATURE_EXCERPT_BYTES]!r})"
        ) from None


def _parse_url(url: str, base: httpx.URL | None = None) -> httpx.URL:
    try:
        return base.join(url) if base is not None else httpx.URL(url)
    except httpx.InvalidURL:
        raise PermanentImageError(f"upstream gave an invalid image url: {url[:200]}") from None


# NAT64's well-known prefix: its last 32 bits are the IPv4 address a connection ends up at.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def non_public_reason(address: str) -> str | None:
    """Why `address` is not a public one to fetch from (`loopback`, `private`, ...), or None."""
    ip = ipaddress.ip_address(address.partition("%")[0])  # an IPv6 zone id is not part of it
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    if isinstance(ip, ipaddress.IPv6Address):
        # The IPv4 address inside first: `::ffff:127.0.0.1` is a loopback one, above all.
        embedded = [ip.ipv4_mapped, ip.sixtofour, ip.teredo[1] if ip.teredo else None]
        if ip in _NAT64:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        candidates += [e for e in embedded if e is not None]
    candidates.append(ip)
    for candidate in candidates:
        for reason, matches in (
            ("loopback", candidate.is_loopback),
            ("unspecified", candidate.is_unspecified),
            ("link-local", candidate.is_link_local),  # 169.254.169.254, the metadata address
            ("multicast", candidate.is_multicast),
            ("reserved", candidate.is_reserved),
            ("private", candidate.is_private),
            ("non-public", not candidate.is_global),
        ):
            if matches:
                return reason
    return None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP date), or None.

    A date without a zone (asctime form, or `-0000`) is UTC, as HTTP dates always are;
    reading it in local time would be off by the server's UTC offset.
    """
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
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        seconds = moment.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)


def _upstream_message(body: bytes) -> str:
    """The upstream's own error message: OpenAI-style `error.message`, else the body's start."""
    try:
        parsed = json.loads(body)
    except ValueError:
        return _excerpt(body)
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            code = error.get("code")
            text = error["message"][:MAX_ERROR_TEXT]
            return f"{text} ({code})" if isinstance(code, str) and code else text
        if isinstance(parsed.get("message"), str):
            return str(parsed["message"])[:MAX_ERROR_TEXT]
    return _excerpt(body)


def _excerpt(body: bytes) -> str:
    text = body[: MAX_ERROR_TEXT * 4].decode("utf-8", errors="replace").strip()
    return text[:MAX_ERROR_TEXT] if text else "(empty body)"
