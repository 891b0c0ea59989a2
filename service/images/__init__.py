"""Image providers: `local` (offline Pillow renderer, the default) and `http` (Seedream).

`create_provider(settings, client)` picks one from the settings.
"""

from __future__ import annotations

import httpx

from service.images.base import CharacterRef, GeneratedImage, ImageProvider, ImageRequest
from service.images.errors import ImageError, PermanentImageError, RetryableImageError
from service.images.http import HttpImageProvider
from service.images.local import LocalImageProvider
from service.settings import ServiceSettings

__all__ = [
    "CharacterRef",
    "GeneratedImage",
    "HttpImageProvider",
    "ImageError",
    "ImageProvider",
    "ImageRequest",
    "LocalImageProvider",
    "PermanentImageError",
    "RetryableImageError",
    "create_provider",
]


def create_provider(settings: ServiceSettings, client: httpx.AsyncClient) -> ImageProvider:
    """The provider `settings.image_provider` names; `client` is shared by `http`."""
    if settings.image_provider == "http":
        return HttpImageProvider(
            client,
            base_url=settings.image_api_base,
            api_key=settings.image_api_key,
            model=settings.image_model,
            timeout_s=settings.image_timeout_s,
            max_bytes=settings.image_max_bytes,
            # A longer wait would outlast the storyboard's own limit: such a shot fails for good.
            max_retry_after_s=settings.storyboard_timeout_s,
        )
    return LocalImageProvider()
