"""Bad input answers a clear 4xx in the contract's error shape, and creates nothing."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import httpx

from tests.service.support import project_body


def _with(**changes: Any) -> dict[str, Any]:
    body = project_body()
    body.update(changes)
    return body


def _shot(**changes: Any) -> dict[str, Any]:
    body = project_body(shots=1)
    body["shots"][0].update(changes)
    return body


def _character(**changes: Any) -> dict[str, Any]:
    body = project_body(shots=1)
    body["characters"][0].update(changes)
    return body


INVALID_PROJECTS: dict[str, Any] = {
    "empty object": {},
    "array": [project_body()],
    "string": "project",
    "null": None,
    "missing title": {k: v for k, v in project_body().items() if k != "title"},
    "empty title": _with(title=""),
    "blank title": _with(title="   "),
    "long title": _with(title="t" * 201),
    "title not a string": _with(title=5),
    "NUL in title": _with(title="a\x00b"),
    "lone surrogate": _with(title="\ud800"),
    "long style": _with(style="s" * 201),
    "bad aspect ratio": _with(aspect_ratio="4:3"),
    "unknown field": _with(colour="red"),
    "no shots": _with(shots=[]),
    "too many shots": project_body(shots=101),
    "shots not a list": _with(shots={"1": "x"}),
    "duplicate shot numbers": _with(shots=[project_body()["shots"][0], project_body()["shots"][0]]),
    "shot number zero": _shot(shot_number=0),
    "shot number too big": _shot(shot_number=1001),
    "shot number float": _shot(shot_number=1.5),
    "shot number string": _shot(shot_number="1"),
    "shot number bool": _shot(shot_number=True),
    "shot number huge": _shot(shot_number=10**30),
    "empty description": _shot(description=""),
    "long description": _shot(description="d" * 2001),
    "zero duration": _shot(duration_seconds=0),
    "negative duration": _shot(duration_seconds=-1),
    "long duration": _shot(duration_seconds=60.5),
    "duration string": _shot(duration_seconds="3"),
    "undefined character": _shot(characters=["Zed"]),
    "character twice in shot": _shot(characters=["Ann", "Ann"]),
    "empty character name": _character(name=""),
    "long character name": _character(name="n" * 101),
    "duplicate character names": _with(
        characters=[{"name": "Ann"}, {"name": "Ann"}], shots=[project_body()["shots"][1]]
    ),
    "too many characters": _with(
        characters=[{"name": f"c{i}"} for i in range(21)], shots=[project_body()["shots"][1]]
    ),
    "long character description": _character(description="d" * 2001),
    "reference url not http": _character(reference_image_url="ftp://example.com/a.png"),
    "reference url relative": _character(reference_image_url="/a.png"),
    "reference url javascript": _character(reference_image_url="javascript:alert(1)"),
    "reference url with spaces": _character(reference_image_url="https://exa mple.com/a.png"),
}


async def test_invalid_projects_answer_422(
    client: httpx.AsyncClient, alice: dict[str, str], pool: asyncpg.Pool
) -> None:
    # One database for all the cases (a loop, not parametrize): each case costs milliseconds.
    for case, body in INVALID_PROJECTS.items():
        content = json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")
        response = await client.post(
            "/api/projects",
            content=content,
            headers={**alice, "Content-Type": "application/json"},
        )
        assert response.status_code in (400, 422), (case, response.text)
        error = response.json()["error"]
        assert error["code"] in ("validation_error", "invalid_json"), case
        assert error["message"], case
        assert isinstance(error["details"], list), case
        if response.status_code == 422 and isinstance(body, dict) and body:
            assert error["details"], case
    assert await pool.fetchval("SELECT count(*) FROM storyboard.projects") == 0


NOT_JSON = {
    "truncated": b'{"title": "x"',
    "not utf-8": b"\xff\xfe{}",
    "empty": b"",
    "deeply nested": b"[" * 100_000 + b"]" * 100_000,
    "trailing garbage": b"{} x",
    "NaN duration": json.dumps(_shot(duration_seconds=float("nan"))).encode(),
    "infinite duration": json.dumps(_shot(duration_seconds=float("inf"))).encode(),
}


async def test_malformed_bodies_answer_4xx(
    client: httpx.AsyncClient, alice: dict[str, str], pool: asyncpg.Pool
) -> None:
    for case, content in NOT_JSON.items():
        response = await client.post("/api/projects", content=content, headers=alice)
        assert 400 <= response.status_code < 500, (case, response.text)
        assert response.json()["error"]["code"] in ("invalid_json", "validation_error"), case
    assert await pool.fetchval("SELECT count(*) FROM storyboard.projects") == 0


async def test_bodies_over_one_mib_answer_413(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    big = json.dumps(_with(style="s" * (1024 * 1024))).encode()
    response = await client.post("/api/projects", content=big, headers=alice)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"

    async def chunks() -> Any:  # no Content-Length: the limit still holds
        for _ in range(20):
            yield b" " * 65536

    response = await client.post("/api/projects", content=chunks(), headers=alice)
    assert response.status_code == 413


INVALID_GENERATE = {
    "shot_numbers not a list": {"shot_numbers": 3},
    "empty shot_numbers": {"shot_numbers": []},
    "duplicate shot_numbers": {"shot_numbers": [1, 1]},
    "shot number out of range": {"shot_numbers": [0]},
    "force not a bool": {"force": "yes"},
    "unknown field": {"shots": [1]},
    "array body": [1, 2],
}


async def test_invalid_generate_bodies(
    client: httpx.AsyncClient, alice: dict[str, str], pool: asyncpg.Pool
) -> None:
    project = (await client.post("/api/projects", json=project_body(), headers=alice)).json()
    for case, body in INVALID_GENERATE.items():
        response = await client.post(
            f"/api/projects/{project['id']}/storyboards/generate", json=body, headers=alice
        )
        assert response.status_code == 422, (case, response.text)
    assert await pool.fetchval("SELECT count(*) FROM pgqueue.jobs") == 0


async def test_unknown_ids_and_routes_answer_404(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    for path in [
        "/api/projects/not-a-uuid",
        "/api/projects/00000000-0000-0000-0000-000000000000",
        "/api/projects/%00",
        "/api/projects/not-a-uuid/storyboards/status",
        "/api/jobs/abc",
        "/api/nothing-here",
    ]:
        response = await client.get(path, headers=alice)
        assert response.status_code == 404, path
        assert response.json()["error"]["code"] == "not_found", path


async def test_wrong_method_answers_405_json(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    response = await client.delete("/api/projects", headers=alice)
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def _encoded(text: str, codec: str) -> bytes:
    return text.encode(codec)


_VALID = json.dumps(project_body(shots=1))
# Inputs of the classes the schemathesis run does not draw: numbers past Python's int-parsing
# limit, nesting past the recursion limit, encodings other than plain UTF-8.
HOSTILE_BODIES = {
    "5,000-digit integer": b'{"title": ' + b"1" * 5000 + b"}",
    "5,000-digit shot number": _VALID.replace(
        '"shot_number": 1', '"shot_number": ' + "9" * 5000
    ).encode(),
    "4,000-digit duration": _VALID.replace(
        '"duration_seconds": 2.5', '"duration_seconds": ' + "9" * 4000
    ).encode(),
    "huge exponent": _VALID.replace(
        '"duration_seconds": 2.5', '"duration_seconds": 1e999999'
    ).encode(),
    "deep arrays": b"[" * 100_000 + b"]" * 100_000,
    "deep objects": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "deep unclosed": b"[" * 100_000,
    "UTF-16 with BOM": _encoded(_VALID, "utf-16"),
    "UTF-16-LE without BOM": _encoded(_VALID, "utf-16-le"),
    "UTF-32": _encoded(_VALID, "utf-32"),
    "UTF-8 BOM": b"\xef\xbb\xbf" + _VALID.encode(),
    "raw lone surrogate": _VALID.replace("Test film", "\ud800").encode("utf-8", "surrogatepass"),
    "invalid UTF-8": _VALID.replace("Test film", "x").encode().replace(b'"x"', b'"\xc3\x28"'),
    "overlong UTF-8": _VALID.replace("Test film", "x").encode().replace(b'"x"', b'"\xc0\xaf"'),
    "Latin-1": _VALID.replace("Test film", "caf\xe9").encode("latin-1"),
}


async def test_hostile_bodies_answer_4xx_and_change_nothing(
    client: httpx.AsyncClient, alice: dict[str, str], pool: asyncpg.Pool
) -> None:
    project = (await client.post("/api/projects", json=project_body(), headers=alice)).json()
    for case, content in HOSTILE_BODIES.items():
        for path in ("/api/projects", f"/api/projects/{project['id']}/storyboards/generate"):
            response = await client.post(
                path, content=content, headers={**alice, "Content-Type": "application/json"}
            )
            assert 400 <= response.status_code < 500, (case, path, response.text[:300])
            error = response.json()["error"]
            assert error["code"] in ("invalid_json", "validation_error"), (case, error)
            assert isinstance(error["message"], str) and isinstance(error["details"], list)
    assert await pool.fetchval("SELECT count(*) FROM storyboard.projects") == 1
    assert await pool.fetchval("SELECT count(*) FROM pgqueue.jobs") == 0


async def test_a_5000_digit_integer_is_invalid_json(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    response = await client.post(
        "/api/projects", content=b'{"title": ' + b"1" * 5000 + b"}", headers=alice
    )
    assert response.status_code == 400, response.text[:300]
    assert response.json()["error"]["code"] == "invalid_json"


ODD_HEADERS: dict[str, list[tuple[str, str]]] = {
    "form content type": [("Content-Type", "application/x-www-form-urlencoded")],
    "multipart without boundary": [("Content-Type", "multipart/form-data")],
    "UTF-16 charset": [("Content-Type", "application/json; charset=utf-16")],
    "unknown charset": [("Content-Type", "application/json; charset=x-nothing")],
    "garbage content type": [("Content-Type", ";;;=\x7f")],
    "empty content type": [("Content-Type", "")],
    "two content types": [("Content-Type", "text/plain"), ("Content-Type", "application/json")],
}


async def test_odd_content_types_answer_4xx_and_change_nothing(
    client: httpx.AsyncClient, alice: dict[str, str], pool: asyncpg.Pool
) -> None:
    bodies = {
        "form": b"title=x&style=y",
        "utf-16": _encoded(_VALID, "utf-16"),
        "multipart": b"--x\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--x--\r\n",
    }
    for case, headers in ODD_HEADERS.items():
        for name, content in bodies.items():
            response = await client.post(
                "/api/projects", content=content, headers=[*alice.items(), *headers]
            )
            assert 400 <= response.status_code < 500, (case, name, response.text[:300])
            assert set(response.json()["error"]) == {"code", "message", "details"}
    # A charset the API does not read is refused even around a body it could parse.
    response = await client.post(
        "/api/projects",
        content=_VALID.encode(),
        headers={**alice, "Content-Type": "application/json; charset=utf-16"},
    )
    assert response.status_code == 415, response.text
    assert response.json()["error"]["code"] == "unsupported_media_type"
    assert await pool.fetchval("SELECT count(*) FROM storyboard.projects") == 0


async def test_odd_authorization_headers_answer_401(
    client: httpx.AsyncClient, alice: dict[str, str], pool: asyncpg.Pool
) -> None:
    token = alice["Authorization"]
    cases: dict[str, list[tuple[str, str | bytes]]] = {
        "huge": [("Authorization", "Bearer " + "a" * 100_000)],
        "huge scheme": [("Authorization", "B" * 100_000 + " x")],
        "duplicated, bad first": [("Authorization", "Bearer nope"), ("Authorization", token)],
        "duplicated, good first": [("Authorization", token), ("Authorization", "Bearer nope")],
        "Latin-1 bytes": [("Authorization", b"Bearer \xe9\xe9\xe9")],
        "control characters": [("Authorization", "Bearer \x01\x02")],
        "no token": [("Authorization", "Bearer ")],
        "basic": [("Authorization", "Basic YTpi")],
    }
    for case, headers in cases.items():
        response = await client.post("/api/projects", json=project_body(), headers=headers)
        if case == "duplicated, good first":
            # The first value counts; a proxy that repeats the header cannot widen access.
            assert response.status_code in (201, 401), (case, response.text)
            if response.status_code == 201:
                await pool.execute("DELETE FROM storyboard.projects")
            continue
        assert response.status_code == 401, (case, response.text[:300])
        assert response.json()["error"]["code"] == "unauthorized", case
    assert await pool.fetchval("SELECT count(*) FROM storyboard.projects") == 0


# pydantic's phrasing, written for programmers: never what a person reads in an answer.
PROGRAMMER_WORDS = (
    "after validation",
    "Input should",
    "Value error",
    "should have",
    "Field required",
)


async def test_validation_messages_are_plain_words(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    for case, body in INVALID_PROJECTS.items():
        if not isinstance(body, dict) or not body:
            continue
        content = json.dumps(body).encode("utf-8", "surrogatepass")
        response = await client.post(
            "/api/projects", content=content, headers={**alice, "Content-Type": "application/json"}
        )
        if response.status_code != 422:
            continue  # not JSON (a lone surrogate): answered 400 before any field is read
        error = response.json()["error"]
        for text in [error["message"], *(d["message"] for d in error["details"])]:
            assert not any(word in text for word in PROGRAMMER_WORDS), (case, text)
        for detail in error["details"]:
            assert set(detail) == {"loc", "message", "type"}, (case, detail)


PLAIN_MESSAGES: dict[str, tuple[Any, list[Any], str]] = {
    # case: (body, the detail's loc, its message)
    "empty title": (_with(title=""), ["title"], "must not be empty"),
    "no shots": (_with(shots=[]), ["shots"], "add at least 1 shot"),
    "missing title": (
        {k: v for k, v in project_body().items() if k != "title"},
        ["title"],
        "is required",
    ),
    "long duration": (
        _shot(duration_seconds=60.5),
        ["shots", 0, "duration_seconds"],
        "must be at most 60 seconds",
    ),
    "zero duration": (
        _shot(duration_seconds=0),
        ["shots", 0, "duration_seconds"],
        "must be more than 0 seconds",
    ),
    "bad aspect ratio": (
        _with(aspect_ratio="4:3"),
        ["aspect_ratio"],
        "must be one of 16:9, 9:16, 1:1",
    ),
    "shot number string": (
        _shot(shot_number="1"),
        ["shots", 0, "shot_number"],
        "must be a whole number",
    ),
    "long title": (
        _with(title="t" * 201),
        ["title"],
        "must be at most 200 characters (this is 201)",
    ),
    "undefined character": (
        _shot(characters=["Zed"]),
        ["shots", 0, "characters"],
        "no character is named Zed",
    ),
    "duplicate shot numbers": (
        _with(shots=[project_body()["shots"][0], project_body()["shots"][0]]),
        ["shots", 1, "shot_number"],
        "shot number 1 is used twice",
    ),
    "duplicate character names": (
        _with(characters=[{"name": "Ann"}, {"name": "Ann"}], shots=[project_body()["shots"][1]]),
        ["characters", 1, "name"],
        "Ann is already a character",
    ),
}


async def test_each_problem_names_its_field_in_plain_words(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    for case, (body, loc, message) in PLAIN_MESSAGES.items():
        response = await client.post("/api/projects", json=body, headers=alice)
        assert response.status_code == 422, (case, response.text)
        error = response.json()["error"]
        assert {"loc": loc, "message": message} in [
            {"loc": d["loc"], "message": d["message"]} for d in error["details"]
        ], (case, error)
        assert message in error["message"], (case, error["message"])


async def test_every_cross_field_problem_is_reported_at_once(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    shot = project_body()["shots"][0]
    body = _with(
        characters=[{"name": "Ann"}, {"name": "Ann"}],
        shots=[{**shot, "characters": ["Zed", "Ed"]}, {**shot, "characters": ["Ann"]}],
    )
    error = (await client.post("/api/projects", json=body, headers=alice)).json()["error"]
    assert [d["loc"] for d in error["details"]] == [
        ["characters", 1, "name"],
        ["shots", 0, "characters"],
        ["shots", 1, "shot_number"],
    ]
    assert error["details"][1]["message"] == "no characters are named Zed, Ed"
    assert error["message"].startswith("3 problems to fix: character row 2, name: ")
