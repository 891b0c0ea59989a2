"""The offline renderer (`IMAGE_PROVIDER=local`): a storyboard frame per shot and generation.

Pure rendering, no database: the service test of a regenerate through a worker is in
tests/service/test_local_frames.py.
"""

from __future__ import annotations

import io
import itertools
import statistics
import time

import pytest
from PIL import Image, ImageChops

from service.images import CharacterRef, ImageRequest
from service.images.base import SIZES
from service.images.local import render
from service.images.render_scene import figure_colour
from service.images.render_style import COMIC, NOIR, PLAIN, look_for

BUDGET_MS = 100  # what one frame may cost at most (CPU time, median of a run)


def _request(generation: int = 1, **changes: object) -> ImageRequest:
    fields: dict[str, object] = {
        "shot_number": 2,
        "description": "Ann lights a cigarette by the rain-streaked window",
        "style": "film noir, charcoal",
        "aspect_ratio": "16:9",
        "characters": (CharacterRef("Ann", "a detective"), CharacterRef("Bo", "an informant")),
        "seed": f"0b8f3c1e:2:{generation}",
        "generation": generation,
    }
    fields.update(changes)
    return ImageRequest(**fields)  # type: ignore[arg-type]


def _image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image.convert("RGB")


def _changed_share(a: bytes, b: bytes) -> float:
    """The share of pixels that differ between two frames of one size."""
    difference = ImageChops.difference(_image(a), _image(b)).convert("L")
    changed = sum(difference.point(lambda v: 255 if v > 8 else 0).histogram()[255:])
    width, height = difference.size
    return changed / (width * height)


def test_the_same_generation_gives_the_same_bytes() -> None:
    assert render(_request(3)) == render(_request(3))


def test_each_generation_is_another_composition() -> None:
    frames = [render(_request(generation)) for generation in range(1, 6)]
    for earlier, later in itertools.pairwise(frames):
        # Not a changed digit in the header: the picture itself moves.
        assert _changed_share(earlier, later) > 0.05


def test_another_project_draws_another_picture_of_the_same_shot() -> None:
    assert _changed_share(render(_request(seed="a:2:1")), render(_request(seed="b:2:1"))) > 0.05


@pytest.mark.parametrize("ratio", list(SIZES))
def test_every_aspect_ratio_has_its_size(ratio: str) -> None:
    data = render(_request(aspect_ratio=ratio))
    assert data.startswith(b"\x89PNG")
    assert Image.open(io.BytesIO(data)).size == SIZES[ratio]


@pytest.mark.parametrize("ratio", list(SIZES))
def test_long_descriptions_and_crowds_do_not_break_the_frame(ratio: str) -> None:
    crowd = tuple(CharacterRef(f"{'N' * 90}{i:02d}", "d" * 2000) for i in range(20))
    for description in ("word " * 400, "x" * 2000, "\n\t ünïcødé 🎬 " * 100, "a"):
        for generation in range(4):  # every framing and setting comes up among these
            data = render(
                _request(generation, aspect_ratio=ratio, description=description, characters=crowd)
            )
            assert Image.open(io.BytesIO(data)).size == SIZES[ratio]


def test_without_characters_style_or_seed_it_still_draws() -> None:
    data = render(_request(characters=(), style="", seed="", generation=0))
    assert Image.open(io.BytesIO(data)).size == SIZES["16:9"]
    # Without a seed the shot's text decides: still reproducible.
    assert render(_request(characters=(), style="", seed="", generation=0)) == data


def test_the_style_picks_the_look() -> None:
    assert look_for("Film Noir, charcoal") is NOIR
    assert look_for("comic book") is COMIC
    # Any other style gets a look of its own text: not one look for all of them.
    assert len({look_for(f"a style of my own, number {n}") for n in range(20)}) > 1
    assert look_for("  ") is PLAIN
    # A noir frame is grey: no channel strays far from the others anywhere.
    noir = _image(render(_request(style="noir")))
    assert all(max(p) - min(p) <= 12 for p in noir.get_flattened_data())


def test_each_character_is_drawn_in_its_colour() -> None:
    def pixels_of(colour: tuple[int, int, int], data: bytes) -> int:
        return sum(1 for p in _image(data).get_flattened_data() if p == colour)

    ann = figure_colour("Ann", COMIC)
    with_ann = render(_request(style="comic", characters=(CharacterRef("Ann", ""),)))
    alone = render(_request(style="comic", characters=()))
    assert pixels_of(ann, with_ann) > 500
    assert pixels_of(ann, alone) < pixels_of(ann, with_ann) // 10


def test_a_frame_renders_well_within_its_budget() -> None:
    render(_request())  # the font's first load is not a frame's cost
    costs_ms = []
    for generation in range(12):
        for ratio in SIZES:
            started = time.process_time()
            render(_request(generation, aspect_ratio=ratio))
            costs_ms.append((time.process_time() - started) * 1000)
    # CPU time, not wall time: a busy machine must not fail this, a slow renderer must.
    assert statistics.median(costs_ms) < BUDGET_MS, costs_ms
