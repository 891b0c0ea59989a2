"""The offline renderer's picture: a composition drawn from a seed, in a style's look.

`Composition.from_seed` decides everything that varies between generations of one shot (the
framing, the horizon, the setting, where the light is, where each character stands and how)
from a `random.Random`, so one seed always gives one picture and the next generation another.
`draw_scene` paints it. Characters keep their colour across shots and generations (it comes
from the name, not the seed), as a storyboard artist keeps a character recognisable.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import math
import random
from functools import lru_cache

from PIL import ImageDraw, ImageFont

from service.images.render_style import RGB, Look, Texture

Box = tuple[int, int, int, int]  # left, top, right, bottom


class Framing(enum.StrEnum):
    """How close the camera is: how tall the figures stand in the scene."""

    WIDE = "wide"
    MEDIUM = "medium"
    CLOSE = "close"


class Setting(enum.StrEnum):
    """What stands behind the figures."""

    CITY = "city"
    HILLS = "hills"
    ROOM = "room"


# Figure height as a share of the scene's height, per framing (a close-up crops the legs).
FIGURE_HEIGHT = {Framing.WIDE: 0.38, Framing.MEDIUM: 0.62, Framing.CLOSE: 1.05}
MIN_FIGURE_HEIGHT_PX = 24  # below this a figure is a smudge: crowds shrink to here, no less
LABEL_FONT_FRACTION = 0.045  # label size, of the scene's shorter side
TEXTURE_ALPHA = 40  # texture strokes are faint: they tint the picture, they do not hide it


@dataclasses.dataclass(frozen=True, slots=True)
class Pose:
    """One character's place and attitude in the frame (fractions of the scene)."""

    x: float  # centre, 0..1 of the scene's width
    scale: float  # of the framing's figure height (depth: further back is smaller)
    left_arm: float  # arm angles in degrees from hanging straight down
    right_arm: float
    facing: int  # -1 left, 1 right: which way the head's eye mark looks


@dataclasses.dataclass(frozen=True, slots=True)
class Composition:
    """Everything one generation of a shot varies.

    Args:
        framing: wide, medium or close.
        setting: city, hills or room.
        horizon: the horizon's height, 0..1 from the scene's top.
        light_x: where the sun, moon or lamp is, 0..1 of the width.
        light_y: its height, 0..1 of the horizon's.
        backdrop_seed: varies the buildings, hills or room's furniture.
        poses: one per character, in the request's order.
        tilt: a Dutch angle: the ground line rises by this share of the scene's width across it
            (-0.08..0.08; 0 for level, two times in three).
    """

    framing: Framing
    setting: Setting
    horizon: float
    light_x: float
    light_y: float
    backdrop_seed: int
    poses: tuple[Pose, ...]
    tilt: float

    @classmethod
    def from_seed(cls, seed: str, characters: int) -> Composition:
        """The composition of `seed` for a shot with `characters` characters."""
        rng = random.Random(hashlib.sha256(seed.encode()).digest())
        framing = rng.choice(list(Framing))
        if characters > 4 and framing is Framing.CLOSE:
            framing = Framing.MEDIUM  # a crowd in close-up is a wall of torsos
        # The group stands on a third (or the middle), spread over a width that grows with it.
        centre = rng.choice((1 / 3, 1 / 2, 2 / 3)) + rng.uniform(-0.05, 0.05)
        spread = min(0.9, 0.18 * characters + rng.uniform(0.0, 0.15))
        poses = []
        for index in range(characters):
            offset = (index + 0.5) / characters - 0.5 if characters > 1 else 0.0
            x = centre + offset * spread + rng.uniform(-0.03, 0.03)
            poses.append(
                Pose(
                    x=min(0.95, max(0.05, x)),
                    scale=rng.uniform(0.8, 1.0),
                    left_arm=rng.uniform(5, 150),
                    right_arm=rng.uniform(5, 150),
                    facing=rng.choice((-1, 1)),
                )
            )
        return cls(
            framing=framing,
            setting=rng.choice(list(Setting)),
            horizon=rng.uniform(0.42, 0.7),
            light_x=rng.uniform(0.1, 0.9),
            light_y=rng.uniform(0.2, 0.7),
            backdrop_seed=rng.getrandbits(32),
            poses=tuple(poses),
            tilt=rng.choice((0.0, 0.0, rng.uniform(-0.08, 0.08))),
        )


@lru_cache(maxsize=64)
def font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's bundled font at `size` px (cached: loading it costs more than drawing text)."""
    loaded = ImageFont.load_default(size=size)
    # Sized text needs Pillow built with FreeType (every wheel on PyPI is).
    assert isinstance(loaded, ImageFont.FreeTypeFont), "Pillow was built without FreeType"
    return loaded


def mix(a: RGB, b: RGB, t: float) -> RGB:
    """The colour `t` of the way from `a` to `b`."""
    return (
        round(a[0] + (b[0] - a[0]) * t),
        round(a[1] + (b[1] - a[1]) * t),
        round(a[2] + (b[2] - a[2]) * t),
    )


def figure_colour(name: str, look: Look) -> RGB:
    """A character's colour: by its name, so it is the same in every shot and generation."""
    digest = hashlib.sha256(name.encode()).digest()
    return look.figures[digest[0] % len(look.figures)]


def draw_scene(
    draw: ImageDraw.ImageDraw, look: Look, composition: Composition, names: tuple[str, ...]
) -> None:
    """Paint the composition over the whole of `draw`'s RGB image (`draw` blends RGBA fills)."""
    box = (0, 0, *draw.im.size)
    left, top, right, bottom = box
    width, height = right - left, bottom - top
    horizon = top + round(height * composition.horizon)
    _sky_and_ground(draw, box, horizon, look)
    _light(draw, box, horizon, look, composition)
    _backdrop(draw, box, horizon, look, composition)
    _texture(draw, (left, top, right, horizon), look, composition.backdrop_seed)
    # The ground line, tilted for a Dutch angle.
    lift = round(width * composition.tilt / 2)
    draw.line(
        (left, horizon + lift, right, horizon - lift), fill=mix(look.ink, look.ground, 0.4), width=2
    )
    _figures(draw, box, horizon, look, composition, names)


def _sky_and_ground(draw: ImageDraw.ImageDraw, box: Box, horizon: int, look: Look) -> None:
    left, top, right, bottom = box
    bands = 16  # a gradient in bands: a per-row gradient costs far more and looks the same
    sky_height = max(1, horizon - top)
    for band in range(bands):
        y0 = top + sky_height * band // bands
        y1 = top + sky_height * (band + 1) // bands
        colour = mix(look.sky, look.accent, 0.35 * band / bands)
        draw.rectangle((left, y0, right, y1), fill=colour)
    ground_height = max(1, bottom - horizon)
    for band in range(bands // 2):
        y0 = horizon + ground_height * band // (bands // 2)
        y1 = horizon + ground_height * (band + 1) // (bands // 2)
        colour = mix(look.ground, look.ink, 0.25 * band / bands)
        draw.rectangle((left, y0, right, y1), fill=colour)


def _light(
    draw: ImageDraw.ImageDraw, box: Box, horizon: int, look: Look, composition: Composition
) -> None:
    left, top, right, _ = box
    radius = round(min(right - left, horizon - top) * 0.12) + 4
    x = left + round((right - left) * composition.light_x)
    y = top + round((horizon - top) * composition.light_y)
    for ring in (2.2, 1.6):  # a soft halo, then the disc
        r = round(radius * ring)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=(*look.accent, 50))
    draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=look.accent)


def _backdrop(
    draw: ImageDraw.ImageDraw, box: Box, horizon: int, look: Look, composition: Composition
) -> None:
    left, top, right, bottom = box
    rng = random.Random(composition.backdrop_seed)
    width = right - left
    shade = mix(look.sky, look.ink, 0.45)
    if composition.setting is Setting.CITY:
        x = left - rng.randint(0, 40)
        while x < right:
            w = rng.randint(width // 14, width // 7)
            h = rng.randint((horizon - top) // 5, (horizon - top) * 3 // 4)
            colour = mix(shade, look.sky, rng.uniform(0.0, 0.35))
            draw.rectangle((x, horizon - h, x + w, horizon), fill=colour)
            lit = mix(look.accent, look.sky, 0.3)
            step = max(8, w // 4)
            for wx in range(x + step // 2, x + w - step // 2, step):
                for wy in range(horizon - h + step // 2, horizon - step, step):
                    if rng.random() < 0.35:
                        draw.rectangle((wx, wy, wx + step // 3, wy + step // 3), fill=lit)
            x += w + rng.randint(0, width // 30)
    elif composition.setting is Setting.HILLS:
        for layer in range(3):
            colour = mix(shade, look.ground, 0.3 + 0.3 * layer)
            points = [(left, horizon)]
            steps = 6
            for i in range(steps + 1):
                peak = rng.uniform(0.05, 0.45 - 0.1 * layer) * (horizon - top)
                points.append((left + width * i // steps, round(horizon - peak)))
            points.append((right, horizon))
            draw.polygon(points, fill=colour)
    else:  # a room: the back wall down to the floor, a window and a door
        draw.rectangle((left, top, right, horizon), fill=mix(look.paper, look.sky, 0.5))
        wall = mix(look.paper, look.ink, 0.15)
        wx = left + round(width * rng.uniform(0.08, 0.6))
        ww = round(width * rng.uniform(0.18, 0.3))
        wy0 = top + round((horizon - top) * 0.15)
        wy1 = top + round((horizon - top) * 0.7)
        draw.rectangle((wx, wy0, wx + ww, wy1), fill=look.sky, outline=wall, width=6)
        draw.line((wx + ww // 2, wy0, wx + ww // 2, wy1), fill=wall, width=4)
        dx = left + round(width * rng.uniform(0.7, 0.88))
        draw.rectangle(
            (dx, top + round((horizon - top) * 0.25), dx + width // 12, horizon), fill=wall
        )
    # Perspective lines on the ground, towards a vanishing point on the horizon.
    vanish = left + round(width * rng.uniform(0.25, 0.75))
    line = mix(look.ground, look.ink, 0.25)
    for i in range(-3, 4):
        draw.line((vanish, horizon, vanish + i * width // 3, bottom), fill=line, width=1)


def _texture(draw: ImageDraw.ImageDraw, box: Box, look: Look, seed: int) -> None:
    left, top, right, bottom = box
    if bottom <= top:
        return
    rng = random.Random(seed ^ 0x5EED)
    stroke = (*look.ink, TEXTURE_ALPHA)
    if look.texture is Texture.HATCH:
        spacing = 14
        span = bottom - top
        for x in range(left - span, right, spacing):
            draw.line((x, bottom, x + span, top), fill=stroke, width=1)
    elif look.texture is Texture.WASH:
        for _ in range(10):
            cx, cy = rng.randint(left, right), rng.randint(top, bottom)
            rx, ry = rng.randint(40, 220), rng.randint(20, 90)
            draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=(*look.accent, 45))
    elif look.texture is Texture.DOTS:
        spacing = 22
        for y in range(top + spacing // 2, bottom, spacing):
            shift = spacing // 2 if (y // spacing) % 2 else 0
            for x in range(left + shift, right, spacing):
                draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=(*look.ink, 55))
    elif look.texture is Texture.GRID:
        glow = (*look.accent, 70)
        for y in range(bottom, top, -max(6, (bottom - top) // 10)):
            draw.line((left, y, right, y), fill=glow, width=1)


def _figures(
    draw: ImageDraw.ImageDraw,
    box: Box,
    horizon: int,
    look: Look,
    composition: Composition,
    names: tuple[str, ...],
) -> None:
    left, top, right, bottom = box
    width, height = right - left, bottom - top
    count = len(names)
    if not count:
        return
    # A crowd shrinks so that each figure keeps about its own width of the frame.
    tall = height * FIGURE_HEIGHT[composition.framing]
    tall = min(tall, max(MIN_FIGURE_HEIGHT_PX, 2.6 * width / count))
    # A crowd's labels stand in staggered rows, each as wide as that many figures' shares.
    rows = 1 if count <= 4 else 2 if count <= 10 else 3
    label_px = max(11, round(min(width, height) * LABEL_FONT_FRACTION * (1 if rows == 1 else 0.8)))
    label_font = font(label_px)
    # Feet stand below the horizon, lower for the nearer (larger) figures.
    ground = horizon + (bottom - horizon) * 0.55
    slot_px = width / count
    # Back to front: the smaller (further) figures first, so nearer ones overlap them.
    order = sorted(range(count), key=lambda i: composition.poses[i].scale)
    for index in order:
        pose, name = composition.poses[index], names[index]
        h = tall * pose.scale
        x = left + width * pose.x
        feet = ground + (bottom - ground) * (pose.scale - 0.8) * 2
        if composition.framing is Framing.CLOSE:
            feet = bottom + h * 0.3  # cropped at the hips
        colour = figure_colour(name, look)
        head_top = _figure(draw, x, feet, h, colour, look, pose)
        lift = (index % rows) * (label_px + 8)
        _label(
            draw, name, x, max(top + 2, head_top - 4 - lift), slot_px * rows, label_font, look, box
        )


def _figure(
    draw: ImageDraw.ImageDraw, x: float, feet: float, h: float, colour: RGB, look: Look, pose: Pose
) -> float:
    """Draw one figure standing at (x, feet), `h` tall; returns the top of its head."""
    head_r = h * 0.1
    neck = feet - h + 2 * head_r
    hips = feet - h * 0.45
    shoulder = h * 0.16
    outline = look.ink  # the same ink for every figure: light and dark ones both stand out
    line_width = max(2, round(h * 0.05))
    # Legs, then arms behind the body, then the body and the head over them.
    for side in (-1, 1):
        draw.line(
            (x + side * shoulder * 0.4, hips, x + side * shoulder * 0.8, feet),
            fill=outline,
            width=line_width + 2,
        )
    for side, angle in ((-1, pose.left_arm), (1, pose.right_arm)):
        rad = math.radians(angle)
        length = h * 0.32
        ax = x + side * shoulder
        ay = neck + head_r * 0.4
        draw.line(
            (ax, ay, ax + side * math.sin(rad) * length, ay + math.cos(rad) * length),
            fill=outline,
            width=line_width + 1,
        )
    draw.rounded_rectangle(
        (x - shoulder, neck, x + shoulder, hips + h * 0.05),
        radius=max(1, round(shoulder * 0.5)),
        fill=colour,
        outline=outline,
        width=max(1, line_width // 2),
    )
    head_top = neck - 2 * head_r
    draw.ellipse(
        (x - head_r, head_top, x + head_r, neck),
        fill=mix(colour, (255, 255, 255), 0.45),
        outline=outline,
        width=max(1, line_width // 2),
    )
    eye = x + pose.facing * head_r * 0.45
    dot = max(1.0, head_r * 0.14)
    draw.ellipse(
        (eye - dot, neck - head_r * 1.1 - dot, eye + dot, neck - head_r * 1.1 + dot), fill=look.ink
    )
    return head_top


def _label(
    draw: ImageDraw.ImageDraw,
    name: str,
    x: float,
    bottom_y: float,
    max_width: float,
    label_font: ImageFont.FreeTypeFont,
    look: Look,
    box: Box,
) -> None:
    """The character's name in a pill above its head, shortened to its share of the width."""
    text = name
    limit = max(max_width - 6, 30)
    full = draw.textlength(text, font=label_font)
    if full > limit:
        # Cut in proportion first (names may be 100 characters), then trim to fit.
        text = text[: max(1, int(len(text) * limit / full))] + "…"
        while len(text) > 2 and draw.textlength(text, font=label_font) > limit:
            text = text[:-2] + "…"
    text_width = draw.textlength(text, font=label_font)
    size = label_font.size
    pad = 3
    x0 = min(max(box[0] + 2, x - text_width / 2 - pad), box[2] - text_width - 2 * pad - 2)
    y0 = max(box[1] + 2, bottom_y - size - 2 * pad)
    draw.rounded_rectangle(
        (x0, y0, x0 + text_width + 2 * pad, y0 + size + 2 * pad),
        radius=4,
        fill=(*look.paper, 220),
    )
    draw.text((x0 + pad, y0 + pad), text, fill=look.ink, font=label_font)
