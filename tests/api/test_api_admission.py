"""A busy API answers 503 at once past its limit of requests in progress, and stays quick for those it took."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from careloop.app import Admission, client_of, create_app
from careloop.deps import ApiLimits, KnownTokens, token_digest


class Gate:
    """An ASGI app whose requests wait until the gate opens, then answer 200."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.waiting = 0

    async def __call__(self, scope, receive, send) -> None:
        self.waiting += 1
        await self.open.wait()
        self.waiting -= 1
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"done"})


async def until(condition, timeout_s: float = 5) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


def test_past_the_limit_a_request_is_a_503_at_once_and_a_place_freed_is_taken_again() -> None:
    async def scenario() -> None:
        gate = Gate()
        admission = Admission(gate, limit=2)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=admission), base_url="http://api") as client:
            held = [asyncio.create_task(client.get(f"/devices/{n}")) for n in range(2)]
            await until(lambda: gate.waiting == 2)
            busy = await asyncio.wait_for(client.get("/devices/3"), timeout=1)
            assert busy.status_code == 503
            assert busy.headers["retry-after"] == "1"
            assert "2 requests in progress" in busy.json()["detail"]
            assert "CARELOOP_API_REQUESTS_IN_PROGRESS" in busy.json()["detail"]
            health = asyncio.create_task(client.get("/health"))  # monitoring is always admitted
            await until(lambda: gate.waiting == 3)
            gate.open.set()
            assert [answer.status_code for answer in await asyncio.gather(*held, health)] == [200, 200, 200]
            assert admission.in_progress == 0
            assert (await client.get("/devices/4")).status_code == 200

    asyncio.run(scenario())


def test_a_request_that_fails_gives_its_place_back() -> None:
    async def failing(scope, receive, send) -> None:
        raise RuntimeError("a bug")

    async def scenario() -> None:
        admission = Admission(failing, limit=1)
        for _ in range(3):
            with pytest.raises(RuntimeError):
                await admission({"type": "http", "path": "/x"}, None, None)
        assert admission.in_progress == 0

    asyncio.run(scenario())


def test_a_client_sending_its_body_slowly_holds_no_place() -> None:
    """The real app admits a request once its whole body has arrived: one that never finishes its body does not
    stop the next request (here a 401, without a token) at the limit of one."""
    app = create_app(None, admin_token=None, mqtt_url=None, limits=ApiLimits(requests_in_progress=1))

    async def scenario() -> None:
        never = asyncio.Event()

        async def trickle():
            await never.wait()

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/rules", "raw_path": b"/rules", "query_string": b"",
                 "headers": [(b"content-type", b"application/json")], "client": ("127.0.0.1", 5000),
                 "server": ("api", 80), "root_path": ""}
        slow = asyncio.create_task(app(scope, trickle, lambda message: asyncio.sleep(0)))
        await asyncio.sleep(0.1)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
            answer = await asyncio.wait_for(client.get("/devices"), timeout=5)
        assert answer.status_code == 401, answer.text
        slow.cancel()

    asyncio.run(scenario())


def test_a_client_slow_to_read_its_answer_holds_no_place() -> None:
    """The place is given back when the answer starts: a client that never reads the body does not keep others
    out."""
    async def answer_then_stall(scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        if scope["path"] == "/big":
            await asyncio.Event().wait()  # the body waits on a client that does not read
        await send({"type": "http.response.body", "body": b"ok"})

    async def scenario() -> None:
        admission = Admission(answer_then_stall, limit=1)
        started: list[dict] = []

        async def record(message) -> None:
            started.append(message)

        stalled = asyncio.create_task(admission({"type": "http", "path": "/big"}, None, record))
        await until(lambda: started)
        assert admission.in_progress == 0
        answers: list[dict] = []

        async def keep(message) -> None:
            answers.append(message)

        await asyncio.wait_for(admission({"type": "http", "path": "/small"}, None, keep), timeout=1)
        assert answers[0]["status"] == 200
        stalled.cancel()

    asyncio.run(scenario())


def test_a_body_shaped_for_the_yaml_scan_costs_nothing_before_authentication() -> None:
    """A 200 kB body shaped for the YAML scan (seconds of pure Python) is not scanned before routing: sent without
    a token it is a 401 at once, so nobody can set the API's threads to it without a token (the rules endpoints
    scan what they read, after authentication: rules.api.rule_document)."""
    app = create_app(None, admin_token=None, mqtt_url=None)
    body = (b"[" * 63 + b"1," * 100_000)[:200_000]

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api",
                                     timeout=30) as client:
            sent = (("/rules", "text/plain"), ("/rules", "application/yaml"), ("/nope", "text/plain"))
            for path, content_type in sent:
                started = time.perf_counter()
                answer = await client.post(path, content=body, headers={"Content-Type": content_type})
                assert answer.status_code in (401, 404), answer.text
                assert time.perf_counter() - started < 0.5, f"{path} {content_type}: answered without the scan"

    asyncio.run(scenario())


def test_one_client_holds_only_its_share_and_the_others_are_still_admitted() -> None:
    """Four places, two for any one client: a token's third request at once is a 429 naming the setting, while
    another token and a client without one (told by its address) still get places; a place given back is the
    client's again, and nothing is left counted."""

    async def scenario() -> None:
        gate = Gate()
        known = KnownTokens()
        known.add("flooder")
        known.add("other")
        admission = Admission(gate, limit=4, per_client=2, known=known)
        flooder, other = {"Authorization": "Bearer flooder"}, {"Authorization": "Bearer other"}
        transport = httpx.ASGITransport(app=admission, client=("203.0.113.7", 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            held = [asyncio.create_task(client.get(f"/devices/{n}", headers=flooder)) for n in range(2)]
            await until(lambda: gate.waiting == 2)
            refused = await asyncio.wait_for(client.get("/devices/3", headers=flooder), timeout=1)
            assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
            assert "has 2 in progress" in refused.json()["detail"]
            assert "CARELOOP_API_REQUESTS_IN_PROGRESS_PER_CLIENT" in refused.json()["detail"]
            held.append(asyncio.create_task(client.get("/devices/4", headers=other)))
            held.append(asyncio.create_task(client.get("/devices/5")))  # no token: its address is the client
            await until(lambda: gate.waiting == 4)
            full = await asyncio.wait_for(client.get("/devices/6", headers=other), timeout=1)
            assert full.status_code == 503, "the process is full: that is the process's answer, not the client's"
            gate.open.set()
            assert [answer.status_code for answer in await asyncio.gather(*held)] == [200] * 4
            assert (await client.get("/devices/7", headers=flooder)).status_code == 200
        assert admission.in_progress == 0 and admission.by_client == {}

    asyncio.run(scenario())


def test_clients_without_a_token_are_told_apart_by_their_address() -> None:
    async def scenario() -> None:
        gate = Gate()
        admission = Admission(gate, limit=10, per_client=1)
        first = httpx.AsyncClient(transport=httpx.ASGITransport(app=admission, client=("198.51.100.1", 1)),
                                  base_url="http://api")
        second = httpx.AsyncClient(transport=httpx.ASGITransport(app=admission, client=("198.51.100.2", 1)),
                                   base_url="http://api")
        async with first, second:
            held = [asyncio.create_task(first.get("/devices")), asyncio.create_task(second.get("/devices"))]
            await until(lambda: gate.waiting == 2)
            assert (await asyncio.wait_for(first.get("/devices"), timeout=1)).status_code == 429
            gate.open.set()
            assert [answer.status_code for answer in await asyncio.gather(*held)] == [200, 200]

    asyncio.run(scenario())


def test_the_share_is_read_from_the_environment_and_never_above_the_limit(monkeypatch) -> None:
    from careloop.settings import Settings

    monkeypatch.setenv("CARELOOP_API_REQUESTS_IN_PROGRESS_PER_CLIENT", "3")
    assert Settings().api_requests_in_progress_per_client == 3
    monkeypatch.setenv("CARELOOP_API_REQUESTS_IN_PROGRESS_PER_CLIENT", "0")
    with pytest.raises(ValueError, match="API_REQUESTS_IN_PROGRESS_PER_CLIENT|api_requests_in_progress_per_client"):
        Settings()
    assert Admission(Gate(), limit=2, per_client=5).per_client == 2


def test_a_token_written_several_ways_is_one_client_and_invented_tokens_count_against_their_address() -> None:
    """Authentication reads "Bearer" in any case and drops the spaces around the token, so admission does too; a
    token this process has not seen valid (an invented one) is told by its address, so inventing tokens gains no
    places."""
    known = KnownTokens()
    known.add("real-token")

    def client(header: bytes | None, address: str = "192.0.2.1") -> bytes:
        headers = [(b"authorization", header)] if header is not None else []
        return client_of({"type": "http", "headers": headers, "client": (address, 1)}, known)

    spellings = [b"Bearer real-token", b"bearer real-token", b"BEARER   real-token", b"Bearer real-token  "]
    assert {client(header) for header in spellings} == {b"token " + token_digest(b"real-token")}
    invented = {client(b"Bearer invented-%d" % n) for n in range(50)}
    assert invented == {client(None)} == {b"address 192.0.2.1"}
    assert client(b"Basic cmVhbC10b2tlbg==") == b"address 192.0.2.1"
    assert client(b"Bearer invented", address="192.0.2.2") == b"address 192.0.2.2"

    async def scenario() -> None:
        gate = Gate()
        admission = Admission(gate, limit=10, per_client=2, known=known)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=admission, client=("192.0.2.1", 1)),
                                     base_url="http://api") as api:
            held = [asyncio.create_task(api.get("/x", headers={"Authorization": f"Bearer invented-{n}"}))
                    for n in range(2)]
            await until(lambda: gate.waiting == 2)
            third = await asyncio.wait_for(api.get("/x", headers={"Authorization": "Bearer invented-3"}), 1)
            assert third.status_code == 429, "a third invented token from the same address holds no place"
            real = asyncio.create_task(api.get("/x", headers={"Authorization": "bearer  real-token"}))
            await until(lambda: gate.waiting == 3)
            gate.open.set()
            assert [answer.status_code for answer in await asyncio.gather(*held, real)] == [200, 200, 200]

    asyncio.run(scenario())


def test_the_known_tokens_keep_the_newest_and_a_token_is_known_once_it_authenticated(database, mqtt_url):
    from fastapi.testclient import TestClient

    from careloop.app import create_app

    known = KnownTokens(size=2)
    for token in ("first", "second", "third"):
        known.add(token)
    assert token_digest(b"first") not in known and token_digest(b"third") in known

    admin = "admin-token-for-the-known-tokens-test"
    app = create_app(database, admin_token=admin, mqtt_url=mqtt_url)
    with TestClient(app) as api:
        assert api.get("/whoami", headers={"Authorization": "Bearer not-a-token"}).status_code == 401
        assert api.get("/whoami", headers={"Authorization": f"Bearer {admin}"}).status_code == 200
    assert token_digest(admin.encode()) in app.state.known_tokens
    assert token_digest(b"not-a-token") not in app.state.known_tokens
