"""The offline renderer's look: a palette and a texture chosen from the project's style text.

A user who writes "film noir, charcoal" should see a grey, hatched frame, and one who writes
"neon cyberpunk" a dark one with glowing colours: the first keyword found in the style decides.
A style that names none of them still gets a look of its own, picked by a hash of its text, so
two projects with different styles are told apart at a glance (and one style always looks the
same, whatever the shot).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib

RGB = tuple[int, int, int]


class Texture(enum.StrEnum):
    """What is laid over the background (drawn by `render_scene`)."""

    HATCH = "hatch"  # diagonal strokes: charcoal, pencil, ink
    WASH = "wash"  # soft blotches: watercolour, pastel
    DOTS = "dots"  # a halftone grid: comic, pop art
    GRID = "grid"  # thin glowing lines: neon, sci-fi
    PLAIN = "plain"  # nothing: clean, flat


@dataclasses.dataclass(frozen=True, slots=True)
class Look:
    """The colours and the texture of one style.

    Args:
        name: a short label for the look (shown in the frame's corner with the style).
        sky: the background's top colour.
        ground: the background's bottom colour (below the horizon).
        accent: the colour of the background's shapes (sun, buildings, hills).
        ink: lines and text.
        paper: the caption bar behind the text.
        figures: the colours characters are drawn in, picked per character.
        texture: what lies over the background.
    """

    name: str
    sky: RGB
    ground: RGB
    accent: RGB
    ink: RGB
    paper: RGB
    figures: tuple[RGB, ...]
    texture: Texture


NOIR = Look(
    "noir",
    sky=(128, 128, 132),
    ground=(92, 92, 96),
    accent=(228, 228, 222),
    ink=(12, 12, 12),
    paper=(232, 232, 228),
    figures=((28, 28, 30), (236, 236, 232), (170, 170, 172), (55, 55, 60)),
    texture=Texture.HATCH,
)
SKETCH = Look(
    "sketch",
    sky=(244, 240, 228),
    ground=(222, 216, 200),
    accent=(170, 160, 140),
    ink=(50, 46, 40),
    paper=(252, 250, 244),
    figures=((70, 66, 60), (110, 100, 90), (140, 120, 100), (90, 90, 110)),
    texture=Texture.HATCH,
)
WATERCOLOUR = Look(
    "watercolour",
    sky=(198, 222, 236),
    ground=(204, 224, 190),
    accent=(240, 190, 170),
    ink=(50, 60, 80),
    paper=(250, 248, 242),
    figures=((200, 110, 120), (90, 140, 190), (120, 170, 110), (210, 160, 80)),
    texture=Texture.WASH,
)
NEON = Look(
    "neon",
    sky=(18, 14, 40),
    ground=(30, 10, 50),
    accent=(255, 60, 180),
    ink=(235, 235, 255),
    paper=(28, 24, 60),
    figures=((0, 230, 255), (255, 70, 200), (255, 220, 60), (120, 255, 140)),
    texture=Texture.GRID,
)
COMIC = Look(
    "comic",
    sky=(120, 200, 250),
    ground=(250, 220, 90),
    accent=(240, 70, 60),
    ink=(10, 10, 10),
    paper=(255, 255, 255),
    figures=((230, 50, 50), (40, 90, 220), (40, 170, 80), (250, 150, 30)),
    texture=Texture.DOTS,
)
WARM = Look(
    "warm",
    sky=(250, 196, 130),
    ground=(170, 96, 60),
    accent=(255, 236, 170),
    ink=(60, 30, 20),
    paper=(255, 244, 226),
    figures=((110, 40, 30), (150, 70, 40), (80, 50, 70), (200, 110, 50)),
    texture=Texture.PLAIN,
)
COLD = Look(
    "cold",
    sky=(170, 200, 225),
    ground=(90, 120, 150),
    accent=(235, 245, 255),
    ink=(20, 35, 55),
    paper=(240, 246, 252),
    figures=((30, 60, 100), (70, 100, 140), (40, 90, 90), (120, 80, 120)),
    texture=Texture.PLAIN,
)
FOREST = Look(
    "forest",
    sky=(196, 220, 190),
    ground=(70, 110, 60),
    accent=(40, 80, 45),
    ink=(25, 40, 25),
    paper=(242, 246, 236),
    figures=((120, 70, 40), (180, 60, 50), (60, 60, 110), (220, 170, 60)),
    texture=Texture.WASH,
)
PLAIN = Look(
    "plain",
    sky=(214, 224, 238),
    ground=(176, 186, 200),
    accent=(246, 248, 252),
    ink=(30, 36, 48),
    paper=(250, 251, 253),
    figures=((47, 91, 211), (179, 38, 30), (31, 122, 77), (154, 103, 0)),
    texture=Texture.PLAIN,
)

# The first keyword (in this order) found in the lower-cased style picks the look.
KEYWORDS: tuple[tuple[tuple[str, ...], Look], ...] = (
    (("noir", "charcoal", "black and white", "b&w", "monochrome", "grayscale", "greyscale"), NOIR),
    (("pencil", "sketch", "ink", "line art", "graphite"), SKETCH),
    (("neon", "cyberpunk", "synthwave", "sci-fi", "night city", "blade runner"), NEON),
    (("comic", "manga", "pop art", "cartoon", "anime"), COMIC),
    (("watercolour", "watercolor", "pastel", "ghibli", "dreamy", "soft"), WATERCOLOUR),
    (("sunset", "warm", "desert", "golden", "western", "autumn"), WARM),
    (("winter", "cold", "snow", "ocean", "ice", "blue", "underwater"), COLD),
    (("forest", "jungle", "green", "nature", "fantasy"), FOREST),
)
# A style that names no keyword gets one of these, by a hash of its text.
FALLBACKS: tuple[Look, ...] = (PLAIN, WATERCOLOUR, WARM, COLD, FOREST)


def look_for(style: str) -> Look:
    """The look of `style`: by its first keyword, else by a hash of its text (empty: plain)."""
    text = style.lower()
    for words, look in KEYWORDS:
        if any(word in text for word in words):
            return look
    if not text.strip():
        return PLAIN
    digest = hashlib.sha256(text.encode()).digest()
    return FALLBACKS[digest[0] % len(FALLBACKS)]
