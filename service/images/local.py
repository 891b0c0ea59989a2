"""`LocalImageProvider`: renders a storyboard frame offline with Pillow. The default provider.

The frame is deterministic (same request, same bytes): a ruled card with the shot number,
the wrapped description, the characters and the style, at the aspect ratio's size.
"""

from __future__ import annotations

import hashlib
import io
import textwrap

import anyio.to_thread
from PIL import Image, ImageDraw, ImageFont

from service.images.base import GeneratedImage, ImageRequest

MARGIN_FRACTION = 0.05  # of the shorter side
MAX_DESCRIPTION_LINES = 14


class LocalImageProvider:
    """Renders frames with Pillow in a worker thread (rendering would block the event loop)."""

    async def generate(self, request: ImageRequest) -> GeneratedImage:
        """Render `request` as a PNG."""
        data = await anyio.to_thread.run_sync(render, request)
        return GeneratedImage(data, "image/png", "png")


def render(request: ImageRequest) -> bytes:
    """The PNG bytes of the frame for `request`."""
    width, height = request.size
    # A pale background tinted by the shot's text, so neighbouring frames are told apart.
    digest = hashlib.sha256(request.prompt.encode()).digest()
    background = tuple(225 + b % 30 for b in digest[:3])
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    margin = int(min(width, height) * MARGIN_FRACTION)
    draw.rectangle(
        (margin // 2, margin // 2, width - margin // 2, height - margin // 2),
        outline=(40, 40, 40),
        width=max(2, margin // 10),
    )
    title_font = ImageFont.load_default(size=max(16, height // 12))
    body_font = ImageFont.load_default(size=max(12, height // 30))
    y = margin
    draw.text((margin, y), f"SHOT {request.shot_number}", fill=(20, 20, 20), font=title_font)
    y += int(height / 12 * 1.4)
    chars_per_line = max(20, int((width - 2 * margin) / (height / 30 * 0.48)))
    lines = textwrap.wrap(request.description, chars_per_line)[:MAX_DESCRIPTION_LINES]
    line_height = int(height / 30 * 1.3)
    for line in lines:
        draw.text((margin, y), line, fill=(30, 30, 30), font=body_font)
        y += line_height
    footer = []
    if request.characters:
        footer.append("Characters: " + ", ".join(c.name for c in request.characters))
    if request.style:
        footer.append(f"Style: {request.style}")
    y = height - margin - line_height * len(footer)
    for line in footer:
        draw.text((margin, y), line[:chars_per_line], fill=(70, 70, 70), font=body_font)
        y += line_height
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()
