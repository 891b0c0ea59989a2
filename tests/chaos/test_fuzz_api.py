"""Chaos: the HTTP API fuzzed from its own OpenAPI document (schemathesis).

The API runs as a real process (`python -m service api`) on a database of its own. Every
operation of the document is called with generated requests, valid ones and invalid ones,
as a user, as an admin, and with no token at all. Whatever comes in, the API must never answer
5xx, and every 4xx must carry the contract's error shape
`{"error": {"code": str, "message": str, "details": list}}`.

Path parameters are sometimes swapped for ids that exist (a project of the user's, one of
another user's, a job of each), so the requests also reach past the 404s.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import asyncpg
import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.openapi import openapi_document
from tests.service import support
from tests.support import db
from tests.support.ports import free_port
from tests.support.processes import Processes, wait_ready

MAX_EXAMPLES = 40  # per operation and caller; keeps the module within a few minutes
STARTUP_TIMEOUT_S = 30
REQUEST_TIMEOUT_S = 10

# The document the API serves; a test below checks that it is exactly what /openapi.json answers.
# The live-progress stream is left out: for a project of the caller's it stays open until done
# or STREAM_MAX_S, which no fuzzed request should wait for (tests/service/test_events.py drives
# it, and test_openapi.py checks its description).
schema = schemathesis.openapi.from_dict(openapi_document()).exclude(operation_id="stream_events")

# Ids that exist, filled once the API runs: path parameters are sometimes drawn from these.
KNOWN: dict[str, list[Any]] = {}


@schema.hook("before_generate_path_parameters")
def _sometimes_known_ids(context: Any, strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    def swap(parameters: Any) -> st.SearchStrategy[Any]:
        if not isinstance(parameters, dict):
            return st.just(parameters)
        # Each parameter independently: as generated, or an id that exists.
        return st.fixed_dictionaries(
            {
                name: st.one_of(st.just(value), st.sampled_from(KNOWN[name]))
                if KNOWN.get(name)
                else st.just(value)
                for name, value in parameters.items()
            }
        )

    return strategy.flatmap(swap)


@pytest.fixture(scope="module")
def fuzz_db(databases: db.Databases) -> Iterator[str]:
    """A migrated database for the module's API."""
    url = asyncio.run(databases.create("fuzz"))
    yield url
    asyncio.run(databases.drop(url))


@pytest.fixture(scope="module")
def api_url(fuzz_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`python -m service api` on a free port, for the whole module; its log is shown at the end."""
    workdir = tmp_path_factory.mktemp("fuzz")
    processes = Processes(workdir)
    try:
        port = free_port()
        env = {"DATABASE_URL": fuzz_db, "MEDIA_DIR": str(workdir / "media")}
        api = processes.service("api", "--port", str(port), name="api", env=env)
        url = f"http://127.0.0.1:{port}"
        asyncio.run(wait_ready(f"{url}/readyz", api, timeout=STARTUP_TIMEOUT_S))
        yield url
    finally:
        processes.close()
        sys.stderr.write(processes.logs() + "\n")


@pytest.fixture(scope="module")
def callers(fuzz_db: str, api_url: str) -> dict[str, dict[str, str]]:
    """Headers of each caller; also fills KNOWN with ids that exist."""
    alice = asyncio.run(support.bearer(fuzz_db, "alice"))
    bob = asyncio.run(support.bearer(fuzz_db, "bob"))
    admin = asyncio.run(support.bearer(fuzz_db, "root", admin=True))
    projects, jobs = [], []
    with httpx.Client(base_url=api_url, timeout=REQUEST_TIMEOUT_S) as client:
        for headers in (alice, bob):
            created = client.post("/api/projects", json=support.project_body(3), headers=headers)
            assert created.status_code == 201, created.text
            project_id = created.json()["id"]
            generated = client.post(
                f"/api/projects/{project_id}/storyboards/generate", headers=headers
            )
            assert generated.status_code == 202, generated.text
            projects.append(project_id)
            jobs.extend(generated.json()["job_ids"])
        bob_jobs = generated.json()["job_ids"]
    KNOWN.update(project_id=projects, job_id=jobs, shot_number=[1, 2, 3])
    KNOWN["bobs"] = [f"/api/projects/{projects[1]}", *(f"/api/jobs/{job}" for job in bob_jobs)]
    return {"alice": alice, "admin": admin, "anonymous": {}}


def test_the_fuzzed_document_is_the_served_one(api_url: str) -> None:
    served = httpx.get(f"{api_url}/openapi.json")
    assert served.status_code == 200
    assert served.json() == openapi_document()


def _check_answer(case: Any, response: Any) -> None:
    request = f"{case.method} {case.formatted_path} -> {response.status_code}"
    assert response.status_code < 500, f"{request}: {response.text[:500]}"
    if response.status_code >= 400:
        content_type = response.headers.get("content-type", [""])[0]  # header -> list of values
        assert content_type.startswith("application/json"), (request, content_type, response.text)
        body = response.json()
        assert isinstance(body, dict) and set(body) == {"error"}, (request, body)
        error = body["error"]
        assert isinstance(error, dict), (request, body)
        assert isinstance(error.get("code"), str), (request, body)
        assert isinstance(error.get("message"), str), (request, body)
        assert isinstance(error.get("details"), list), (request, body)


@pytest.mark.parametrize("caller", ["alice", "admin", "anonymous"])
@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,  # the same requests on every run of `make test`: failures reproduce
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_no_5xx_and_every_error_in_the_contract_shape(
    case: Any, caller: str, callers: dict[str, dict[str, str]], api_url: str
) -> None:
    headers = callers[caller]
    if not headers and case.headers:
        case.headers.pop("Authorization", None)  # no token at all
    response = case.call(base_url=api_url, headers=headers, timeout=REQUEST_TIMEOUT_S)
    _check_answer(case, response)
    if caller == "alice" and response.status_code < 300:
        # Another user's project or job answers 404, never its data.
        path = case.formatted_path
        assert not any(path == p or path.startswith(f"{p}/") for p in KNOWN["bobs"]), (
            path,
            response.text[:500],
        )


# -- the classes of input schemathesis does not draw ------------------------------------------
# Its bodies are JSON that a Python encoder writes: small numbers, shallow, UTF-8, with the
# declared Content-Type and one Authorization header. These are drawn from around them.

_DIGITS = st.integers(min_value=4_301, max_value=20_000).map(lambda n: "9" * n)
_HUGE_NUMBERS = st.one_of(
    _DIGITS,
    _DIGITS.map(lambda d: f"-{d}"),
    _DIGITS.map(lambda d: f"{d}.5"),
    st.integers(min_value=309, max_value=10**6).map(lambda e: f"1e{e}"),
)
_DEEP = st.tuples(st.sampled_from(["[", '{"a":', "[{}, "]), st.integers(1_000, 200_000)).map(
    lambda t: t[0] * t[1]
)
_ENCODINGS = st.sampled_from(["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-8-sig"])


@st.composite
def _hostile_body(draw: st.DrawFn) -> bytes:
    valid = json.dumps(support.project_body(draw(st.integers(1, 3))))
    kind = draw(st.sampled_from(["number", "deep", "encoding", "surrogate", "invalid utf-8"]))
    if kind == "number":
        field = draw(st.sampled_from(['"shot_number": 1', '"duration_seconds": 2.5']))
        return valid.replace(field, field.split(":")[0] + ": " + draw(_HUGE_NUMBERS), 1).encode()
    if kind == "deep":
        opening = draw(_DEEP)
        closing = "".join("]" if c == "[" else "}" for c in opening if c in "[{")
        return (opening + ("1" if opening.endswith(":") else "") + closing[::-1]).encode()[
            : draw(st.sampled_from([None, 1_000, 50_000]))
        ]
    if kind == "encoding":
        return valid.encode(draw(_ENCODINGS))
    if kind == "surrogate":
        return valid.replace("Test film", "\ud800x\udfff").encode("utf-8", "surrogatepass")
    cut = draw(st.integers(1, len(valid) - 1))
    garbage = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0\x80", b"\x80"]))
    return valid.encode()[:cut] + garbage + valid.encode()[cut:]


_CONTENT_TYPES = st.sampled_from(
    [
        None,
        "application/json",
        "application/json; charset=utf-16",
        "application/json; charset=latin-1",
        "application/json; charset=",
        "text/plain",
        "multipart/form-data",
        "application/x-www-form-urlencoded",
        ";;=;",
        "",
    ]
)
_AUTHORIZATIONS = st.sampled_from(
    [
        "Bearer " + "a" * 8_000,
        "B" * 8_000,
        "Bearer \x01",
        "Bearer",
        "Basic YTpi",
    ]
)


@settings(
    max_examples=MAX_EXAMPLES * 3,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    body=_hostile_body(),
    content_type=_CONTENT_TYPES,
    second_auth=st.one_of(st.none(), _AUTHORIZATIONS),
    target=st.sampled_from(["create", "generate"]),
)
def test_hostile_bodies_and_headers_answer_4xx_and_change_nothing(
    body: bytes,
    content_type: str | None,
    second_auth: str | None,
    target: str,
    callers: dict[str, dict[str, str]],
    api_url: str,
    fuzz_db: str,
) -> None:
    headers = [("Authorization", callers["alice"]["Authorization"])]
    if second_auth is not None:
        headers.append(("Authorization", second_auth))
    if content_type is not None:
        headers.append(("Content-Type", content_type))
    path = "/api/projects"
    if target == "generate":
        path = f"/api/projects/{KNOWN['project_id'][0]}/storyboards/generate"
    before = asyncio.run(_counts(fuzz_db))
    with httpx.Client(base_url=api_url, timeout=REQUEST_TIMEOUT_S) as client:
        response = client.post(path, content=body, headers=headers)
    assert 400 <= response.status_code < 500, (path, body[:200], headers, response.text[:500])
    assert response.headers["content-type"].startswith("application/json"), response.text[:500]
    error = response.json()["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str)
    assert isinstance(error["details"], list)
    assert asyncio.run(_counts(fuzz_db)) == before


def test_huge_and_duplicated_authorization_headers_answer_401(api_url: str) -> None:
    cases = [
        [("Authorization", "Bearer " + "a" * 8_000)],
        [("Authorization", "Bearer nope"), ("Authorization", "Bearer nope2")],
        [("Authorization", b"Bearer \xe9\xe9")],
    ]
    with httpx.Client(base_url=api_url, timeout=REQUEST_TIMEOUT_S) as client:
        for headers in cases:
            response = client.get("/api/projects", headers=headers)
            assert response.status_code == 401, (headers, response.text[:300])
            assert response.json()["error"]["code"] == "unauthorized"


async def _counts(url: str) -> tuple[int, int]:
    conn = await asyncpg.connect(url)
    try:
        projects = await conn.fetchval("SELECT count(*) FROM storyboard.projects")
        jobs = await conn.fetchval("SELECT count(*) FROM pgqueue.jobs")
    finally:
        await conn.close()
    return projects, jobs


# -- query strings and path segments, on the API and the dashboard ----------------------------
# schemathesis draws values of the document's types (an integer for `limit`), never the text a
# URL really carries. These tests send that text to every route of the application, the
# dashboard's included (signed in as an admin), in every query parameter any route reads and in
# every path parameter: digits of other scripts (`str.isdigit()` is true for `²`, and `int()`
# raises), NUL bytes (Postgres text cannot hold one), huge numbers, signs, spaces, and escapes
# that decode to no UTF-8 at all.

# Every query parameter a route of the application reads (the dashboard's notice reads
# done, job, queue), plus one none does.
QUERY_NAMES = (
    "queue",
    "state",
    "kind",
    "limit",
    "before",
    "budget_s",
    "done",
    "job",
    "payload",
    "ids",
    "count",
    "stopping",
    "x",
)
NASTY = (
    "²",
    "①",
    "٣",
    "\uff11",  # fullwidth 1
    "\U0001d7d7",  # mathematical bold 9
    "\x00",
    "1\x00",
    "queued\x00",
    "-1",
    "+1",
    " 1",
    "1.5",
    "1e400",
    "0x1f",
    "9" * 25,
    "9" * 5000,
    "\ufeff1",
)
# Raw escapes that decode to invalid UTF-8, or are no escape at all.
RAW_ESCAPES = ("%ff", "%c3%28", "%ed%a0%80", "%00", "%", "%zz")
# Drains run as long as their budget: no value drawn here is a budget the drain accepts.
_NASTY_TEXT = st.one_of(st.sampled_from(NASTY), st.text(max_size=40))


def _routes() -> list[tuple[str, str]]:
    """(method, path template) of every route the API serves, the dashboard's included."""
    from starlette.routing import Mount, Route

    from service import admin, events, metrics, routes, studio

    found: list[tuple[str, str]] = []

    def walk(items: Any, prefix: str) -> None:
        for item in items:
            if isinstance(item, Route):
                found.extend((m, prefix + item.path) for m in sorted(item.methods or ()))
            elif isinstance(item, Mount):
                inner = getattr(item.app, "routes", None)
                if inner is None:  # static files: a path of any depth
                    found.append(("GET", prefix + item.path + "/{path}"))
                else:
                    walk(inner, prefix + item.path)

    walk([*routes.ROUTES, *events.ROUTES, *admin.ROUTES, *metrics.ROUTES, *studio.ROUTES], "")
    return [(m, p) for m, p in found if m != "HEAD"]


ROUTES = _routes()


def _fill(template: str, segment: str) -> str:
    """The path of `template` with every parameter (`{name}` or `{name:type}`) as `segment`."""
    parts = template.split("{")
    return parts[0] + "".join(segment + rest.split("}", 1)[1] for rest in parts[1:])


@pytest.fixture(scope="module")
def dashboard_cookies(callers: dict[str, dict[str, str]], api_url: str) -> dict[str, str]:
    """The cookies of a browser signed in to the dashboard with the admin's token."""
    with httpx.Client(base_url=api_url, timeout=REQUEST_TIMEOUT_S) as client:
        _sign_in(client, callers)
        return dict(client.cookies)


def _sign_in(client: httpx.Client, callers: dict[str, dict[str, str]]) -> str:
    """Signs the admin in to the dashboard; the Cookie header of the session."""
    token = callers["admin"]["Authorization"].removeprefix("Bearer ")
    client.cookies.clear()
    answer = client.post("/dashboard/sign-in", data={"token": token})
    assert answer.status_code == 303, answer.text[:300]
    assert client.get("/dashboard/").status_code == 200
    cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    client.cookies.clear()  # sent by `send` as a header, for the admin only
    return cookie


# The query parameters each route reads; every other route reads none, and gets them all.
READS = {
    "/api/jobs": ("queue", "state", "kind", "limit", "before"),
    "/api/worker/drain": ("budget_s",),
    "/dashboard/": ("queue", "state", "kind", "payload", "before", "done", "count", "stopping"),
    "/dashboard/live": ("ids",),
    "/dashboard/sign-in": ("done", "job", "queue"),
}


class _Sender:
    """One client for many requests, each as `caller`, the admin with the dashboard's cookie."""

    def __init__(self, api_url: str, callers: Any, cookies: dict[str, str]) -> None:
        self.client = httpx.Client(base_url=api_url, timeout=REQUEST_TIMEOUT_S)
        self.callers = callers
        self.cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())

    def send(
        self, method: str, path: str, query: str, caller: str, form: str | None = None
    ) -> None:
        headers = dict(self.callers[caller])
        if caller == "admin":
            headers["Cookie"] = self.cookie
        if form is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        url = f"{self.client.base_url}".rstrip("/") + path + (f"?{query}" if query else "")
        response = self.client.request(
            method, httpx.URL(url), headers=headers, content=None if form is None else form
        )
        # A fuzzed sign-out deletes the cookie: the next request still sends it.
        self.client.cookies.clear()
        request = f"{caller}: {method} {path[:200]}?{query[:200]} -> {response.status_code}"
        assert response.status_code < 500, f"{request}: {response.text[:300]}"
        if caller == "admin" and method == "POST" and path.endswith("/sign-out"):
            # It ended the admin's session in the database: every later request as the admin
            # would meet the sign-in page, not the dashboard it means to fuzz. Sign in again.
            self.cookie = _sign_in(self.client, self.callers)
        if path.startswith("/api/") and response.status_code >= 400:
            error = response.json()["error"]  # the contract's shape on the JSON API
            assert isinstance(error["code"], str) and isinstance(error["message"], str), request


@pytest.fixture(scope="module")
def sender(
    callers: dict[str, dict[str, str]], dashboard_cookies: dict[str, str], api_url: str
) -> Iterator[_Sender]:
    """Sends a request as a caller and checks its answer is no 5xx."""
    sender = _Sender(api_url, callers, dashboard_cookies)
    yield sender
    sender.client.close()


@pytest.mark.parametrize("caller", ["alice", "admin", "anonymous"])
def test_every_route_refuses_nasty_query_values_with_4xx(caller: str, sender: _Sender) -> None:
    values = [quote(v, safe="") for v in NASTY] + list(RAW_ESCAPES)
    for method, template in ROUTES:
        path = _fill(template, "0")  # an id no route finds: no drain or stream runs long
        reads = READS.get(template)
        for value in values:
            if reads is None:
                sender.send(method, path, "&".join(f"{n}={value}" for n in QUERY_NAMES), caller)
                continue
            for name in reads:
                sender.send(method, path, f"{name}={value}", caller)


# The dashboard's bulk actions, whose path names the action (the fill above gives "0": a 404
# before any filter is read): their filter in the query (the confirmation) and in the form.
BULK_PATHS = ("/dashboard/bulk/retry", "/dashboard/bulk/cancel")
BULK_FIELDS = ("queue", "state", "kind", "payload", "up_to")
NASTY_JSON = (
    '{"a": 1e400}',
    '{"a": NaN}',
    '{"a": "\\u0000"}',
    '{"a": "\\ud800"}',
    "[1]",
    "[" * 600,
)


@pytest.mark.parametrize("caller", ["alice", "admin", "anonymous"])
def test_the_bulk_actions_refuse_nasty_filters_with_4xx(caller: str, sender: _Sender) -> None:
    values = [quote(v, safe="") for v in (*NASTY, *NASTY_JSON)] + list(RAW_ESCAPES)
    for path in BULK_PATHS:
        for name in BULK_FIELDS:
            for value in values:
                sender.send("GET", path, f"{name}={value}", caller)
                sender.send("POST", path, "", caller, form=f"{name}={value}&up_to=1")


@pytest.mark.parametrize("caller", ["alice", "admin", "anonymous"])
def test_every_route_refuses_nasty_path_segments_with_4xx(caller: str, sender: _Sender) -> None:
    segments = [quote(v, safe="") for v in NASTY] + list(RAW_ESCAPES)
    for method, template in ROUTES:
        if "{" in template:
            for segment in segments:
                sender.send(method, _fill(template, segment), "", caller)


@settings(
    max_examples=MAX_EXAMPLES * 5,
    deadline=None,
    derandomize=True,  # the same requests on every run: a failure here is reproducible
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    route=st.sampled_from(ROUTES),
    segment=_NASTY_TEXT,
    query=st.lists(
        st.tuples(
            st.sampled_from(QUERY_NAMES), st.one_of(_NASTY_TEXT, st.sampled_from(RAW_ESCAPES))
        ),
        max_size=4,
    ),
    caller=st.sampled_from(["alice", "admin", "anonymous"]),
)
def test_fuzzed_urls_never_answer_5xx(
    route: tuple[str, str],
    segment: str,
    query: list[tuple[str, str]],
    caller: str,
    sender: _Sender,
) -> None:
    method, template = route
    path = _fill(template, quote(segment, safe="") or "0")
    pairs = [
        f"{quote(n)}={v if v in RAW_ESCAPES else quote(v, safe='')}"
        for n, v in query
        # No budget the drain would accept: a drain runs for as long as it is given.
        if not (n == "budget_s" and _is_budget(v))
    ]
    sender.send(method, path, "&".join(pairs), caller)


def _is_budget(value: str) -> bool:
    try:
        return float(value) >= 1
    except ValueError:
        return False
