"""`LocalImageProvider`: renders a storyboard frame offline with Pillow. The default provider.

The frame is a storyboard panel: a header with the shot's number and the take (the
generation), the scene (`render_scene`: the shot's characters as labelled figures in a
setting, in the look the project's style picks, `render_style`), and a caption with the
shot's description and the style. The composition is seeded by the request's `seed` (project,
shot and generation): the same generation always gives the same bytes, the next one (a
regenerate) another picture. About 30 ms of CPU a frame at 1280x720, two thirds of it the
PNG encoding (tests/unit/test_render_local.py holds it under 100 ms).
"""

from __future__ import annotations

import io
import textwrap

import anyio.to_thread
from PIL import Image, ImageDraw

from service.images.base import GeneratedImage, ImageRequest
from service.images.render_scene import Composition, draw_scene, font, mix
from service.images.render_style import look_for

MARGIN_FRACTION = 0.035  # of the shorter side
HEADER_FONT_FRACTION = 0.075  # of the shorter side
CAPTION_FONT_FRACTION = 0.042  # of the shorter side
MAX_CAPTION_LINES = 3  # the rest of a long description is cut with an ellipsis
CHAR_WIDTH_EM = 0.56  # the bundled font's average character width, to wrap by characters
# zlib level 1: a frame is mostly flat colour, so it compresses well at the fastest level
# (level 6 took three times as long for a file about 15 % smaller).
PNG_COMPRESS_LEVEL = 1


class LocalImageProvider:
    """Renders frames with Pillow in a worker thread (rendering would block the event loop)."""

    async def generate(self, request: ImageRequest) -> GeneratedImage:
        """Render `request` as a PNG."""
        data = await anyio.to_thread.run_sync(render, request)
        return GeneratedImage(data, "image/png", "png")


def render(request: ImageRequest) -> bytes:
    """The PNG bytes of the frame for `request` (the same request, the same bytes)."""
    width, height = request.size
    look = look_for(request.style)
    image = Image.new("RGB", (width, height), look.paper)
    # RGBA drawing on an RGB image blends translucent fills (halos, textures, label pills).
    draw = ImageDraw.Draw(image, "RGBA")
    short = min(width, height)
    margin = round(short * MARGIN_FRACTION)
    header_font = font(round(short * HEADER_FONT_FRACTION))
    caption_size = round(short * CAPTION_FONT_FRACTION)
    caption_font = font(caption_size)
    line_height = round(caption_size * 1.3)
    header_height = round(short * HEADER_FONT_FRACTION * 1.6)

    caption = _caption_lines(request, width - 2 * margin, caption_size)
    caption_height = line_height * len(caption) + margin
    scene = (margin, margin + header_height, width - margin, height - caption_height - margin)
    seed = request.seed or f"{request.shot_number}:{request.description}"
    composition = Composition.from_seed(seed, len(request.characters))
    # Drawn on its own canvas, so what reaches past the scene's edge (a close-up's legs, a
    # crowd at the sides) is cut off there, as a camera's frame cuts it.
    canvas = Image.new("RGB", (scene[2] - scene[0], scene[3] - scene[1]), look.sky)
    names = tuple(c.name for c in request.characters)
    draw_scene(ImageDraw.Draw(canvas, "RGBA"), look, composition, names)
    image.paste(canvas, scene[:2])
    draw.rectangle(scene, outline=look.ink, width=max(2, margin // 6))

    # The header: the shot on the left, the take and the ratio on the right.
    text_y = margin + (header_height - header_font.size) // 2 - 2
    draw.text((margin, text_y), f"SHOT {request.shot_number}", fill=look.ink, font=header_font)
    right = " · ".join(
        part
        for part in (
            f"take {request.generation}" if request.generation else "",
            request.aspect_ratio,
            composition.framing.value,
        )
        if part
    )
    draw.text(
        (width - margin - draw.textlength(right, font=caption_font), text_y + 4),
        right,
        fill=mix(look.ink, look.paper, 0.35),
        font=caption_font,
    )
    # The caption: the description, then the style in a lighter ink.
    y = scene[3] + margin // 2
    for index, line in enumerate(caption):
        is_style = index == len(caption) - 1 and bool(request.style)
        colour = mix(look.ink, look.paper, 0.4) if is_style else look.ink
        draw.text((margin, y), line, fill=colour, font=caption_font)
        y += line_height
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def _caption_lines(request: ImageRequest, width_px: int, font_px: int) -> list[str]:
    """The description wrapped to the frame (at most `MAX_CAPTION_LINES`), then the style."""
    per_line = max(12, int(width_px / (font_px * CHAR_WIDTH_EM)))
    lines = textwrap.wrap(" ".join(request.description.split()), per_line) or [""]
    if len(lines) > MAX_CAPTION_LINES:
        lines = lines[:MAX_CAPTION_LINES]
        lines[-1] = lines[-1][: per_line - 1].rstrip() + "…"
    if request.style:
        lines.append(textwrap.shorten(f"Style: {request.style}", per_line, placeholder="…"))
    return lines
