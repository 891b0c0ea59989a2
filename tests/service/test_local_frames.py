"""The offline renderer through the service: a regenerate draws a new picture of the shot,
and the generation that drew a picture keeps drawing the same one."""

from __future__ import annotations

import io
from collections.abc import Callable

import httpx
from PIL import Image, ImageChops

from pgqueue import Worker
from service.images import CharacterRef, ImageRequest
from service.images.local import render
from service.settings import ServiceSettings
from tests.service.support import project_body, wait_done


async def _image(
    client: httpx.AsyncClient, project_id: str, shot: int, alice: dict[str, str]
) -> bytes:
    status = await wait_done(client, project_id, alice)
    (storyboard,) = [s for s in status["storyboards"] if s["shot_number"] == shot]
    assert storyboard["status"] == "success", storyboard
    response = await client.get(storyboard["image_url"])
    assert response.status_code == 200
    return response.content


async def test_regenerate_draws_another_composition_of_the_shot(
    client: httpx.AsyncClient,
    alice: dict[str, str],
    settings: ServiceSettings,
    run_worker: Callable[..., Worker],
) -> None:
    body = project_body(2, style="film noir")
    project = (await client.post("/api/projects", json=body, headers=alice)).json()
    project_id = project["id"]
    answer = await client.post(f"/api/projects/{project_id}/storyboards/generate", headers=alice)
    assert answer.status_code == 202, answer.text
    run_worker(settings)
    first = await _image(client, project_id, 1, alice)

    answer = await client.post(
        f"/api/projects/{project_id}/storyboards/1/regenerate", headers=alice
    )
    assert answer.status_code == 202, answer.text
    await wait_done(client, project_id, alice)
    second = await _image(client, project_id, 1, alice)

    before = Image.open(io.BytesIO(first)).convert("L")
    after = Image.open(io.BytesIO(second)).convert("L")
    changed = ImageChops.difference(before, after).point(lambda v: 255 if v > 8 else 0)
    assert changed.histogram()[255] > 0.05 * before.width * before.height
    # Each is the frame of its generation (1, then 2): reproducible from the project alone.
    shot = body["shots"][0]
    characters = tuple(
        CharacterRef(c["name"], c["description"], c.get("reference_image_url"))
        for c in body["characters"]
        if c["name"] in shot["characters"]
    )
    for generation, stored in ((1, first), (2, second)):
        request = ImageRequest(
            shot_number=1,
            description=shot["description"],
            style=body["style"],
            aspect_ratio=body["aspect_ratio"],
            characters=characters,
            seed=f"{project_id}:1:{generation}",
            generation=generation,
        )
        assert render(request) == stored
