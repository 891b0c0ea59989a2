"""Errors of image providers, as the job handler needs to tell them apart.

    ImageError                  any failure to produce an image
    ├── RetryableImageError     408/409/425/429/5xx, time-outs, connection errors: try again
    └── PermanentImageError     any other 4xx (e.g. a content-policy refusal): do not retry

Every class's docstring is its default message.
"""

from __future__ import annotations


class ImageError(Exception):
    """The image could not be generated."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


THROTTLE_STATUS = 429


class RetryableImageError(ImageError):
    """The image provider failed in a way a later attempt may not."""

    def __init__(
        self,
        message: str | None = None,
        *,
        retry_after_s: float | None = None,
        status: int | None = None,
        unreachable: bool = False,
    ) -> None:
        """Args:
        message: what went wrong, for the storyboard's error and the job's last_error.
        retry_after_s: the provider's `Retry-After`, in seconds, when it sent one.
        status: the upstream's HTTP status, when it answered one (429: it is rate limiting
            every caller, not failing this request).
        unreachable: no answer came (a time-out, a connection refused or reset).
        """
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.status = status
        self.unreachable = unreachable

    @property
    def throttled(self) -> bool:
        """A 429 with `Retry-After`: the upstream rate limits every caller (a throttle)."""
        return self.status == THROTTLE_STATUS and self.retry_after_s is not None

    @property
    def upstream_down(self) -> bool:
        """The upstream is failing as a whole (a 5xx, or no answer), not this request: what
        its circuit breaker counts. A 429 is not (the rate limit's signal), nor a bad body."""
        return self.unreachable or (self.status is not None and self.status >= 500)


class PermanentImageError(ImageError):
    """The image provider refused the request; retrying the same request cannot help."""
