"""What every image provider takes and gives: `ImageRequest`, `GeneratedImage`, the protocol."""

from __future__ import annotations

import dataclasses
from typing import Protocol

# The pixel size asked for per aspect ratio: sizes Seedream accepts, and the local renderer's.
SIZES: dict[str, tuple[int, int]] = {
    "16:9": (1280, 720),
    "9:16": (720, 1280),
    "1:1": (1024, 1024),
}

# The only formats stored, by their magic numbers (CONTRACT.md): what upstreams answer with and
# what every browser shows. The signature alone decides: the bytes are stored exactly as
# received, never decoded here (a decoder such as Pillow's would parse untrusted bytes for no
# gain: the type is all we need, and a broken image is the upstream's to answer for).
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"  # SOI, then the first marker's 0xFF
SIGNATURE_EXCERPT_BYTES = 16  # of unrecognised bytes, shown in the error


def image_type(data: bytes) -> tuple[str, str] | None:
    """The (content type, extension) of PNG, JPEG or WebP bytes by their signature, else None."""
    if data.startswith(PNG_SIGNATURE):
        return "image/png", "png"
    if data.startswith(JPEG_SIGNATURE):
        return "image/jpeg", "jpg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp", "webp"
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class CharacterRef:
    """A character appearing in a shot."""

    name: str
    description: str
    reference_image_url: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class ImageRequest:
    """One storyboard frame to generate.

    Args:
        shot_number: the shot's number.
        description: what happens in the shot.
        style: the project's visual style (may be empty).
        aspect_ratio: one of `SIZES`.
        characters: the characters in the shot, in the project's order.
        request_id: names this request to the upstream and in logs (the http provider sends
            it as `X-Request-Id`), e.g. `storyboard-<project_id>-<shot_number>-<job_id>`;
            empty for none. Upstreams ignore it; operators and test fakes attribute calls by it.
        seed: what varies the offline renderer's composition, e.g.
            `<project_id>:<shot_number>:<generation>`: one seed, one picture, so a regenerate
            (a new generation) draws another. Empty: derived from the shot. The http provider
            ignores it (an upstream varies its pictures itself).
        generation: the project's generate call this frame belongs to, shown as the take by
            the offline renderer; 0 for none.
    """

    shot_number: int
    description: str
    style: str
    aspect_ratio: str
    characters: tuple[CharacterRef, ...] = ()
    request_id: str = ""
    seed: str = ""
    generation: int = 0

    def __post_init__(self) -> None:
        if self.aspect_ratio not in SIZES:
            raise ValueError(f"aspect_ratio must be one of {', '.join(SIZES)}")

    @property
    def size(self) -> tuple[int, int]:
        """Width and height in pixels."""
        return SIZES[self.aspect_ratio]

    @property
    def prompt(self) -> str:
        """The text prompt: style, shot description, and the characters' descriptions."""
        parts = []
        if self.style:
            parts.append(f"Style: {self.style}.")
        parts.append(f"Storyboard frame, shot {self.shot_number}: {self.description}")
        for character in self.characters:
            text = f"{character.name}: {character.description}".rstrip(": ")
            parts.append(f"Character {text}")
        return "\n".join(parts)

    @property
    def reference_image_urls(self) -> list[str]:
        """The reference images of the characters in the shot."""
        return [c.reference_image_url for c in self.characters if c.reference_image_url]


@dataclasses.dataclass(frozen=True, slots=True)
class GeneratedImage:
    """Image bytes exactly as produced, with their media type and file extension."""

    data: bytes
    content_type: str
    extension: str

    @classmethod
    def from_bytes(cls, data: bytes) -> GeneratedImage:
        """Name the bytes by their signature (`image_type`).

        Raises:
            ValueError: the bytes are not a PNG, JPEG or WebP; the message shows how they start.
        """
        found = image_type(data)
        if found is None:
            raise ValueError(f"not an image (starts with {data[:SIGNATURE_EXCERPT_BYTES]!r})")
        return cls(data, *found)


class ImageProvider(Protocol):
    """Turns an `ImageRequest` into image bytes, raising `images.errors.ImageError`s."""

    async def generate(self, request: ImageRequest) -> GeneratedImage:
        """Generate one image."""
        ...
