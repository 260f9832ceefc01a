"""The built-in emulator's push client against loopback servers that answer in each framing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from clickstream.emulators.push_client import BadResponse, PushClient

Answer = Callable[[int], bytes]  # the n-th request's raw response (from 1)


@asynccontextmanager
async def server(answer: Answer, close_after_each: bool = False) -> AsyncIterator[dict]:
    """A loopback server reading whole POSTs; yields its stats (`url`, `connections`,
    `bodies`)."""
    stats: dict = {"connections": 0, "bodies": []}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stats["connections"] += 1
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                stats["bodies"].append(await reader.readexactly(length))
                writer.write(answer(len(stats["bodies"])))
                await writer.drain()
                if close_after_each:
                    break
        except asyncio.IncompleteReadError:
            pass
        writer.close()

    listening = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = listening.sockets[0].getsockname()[1]
    stats["url"] = f"http://127.0.0.1:{port}/push?x=1"
    async with listening:
        yield stats


CHUNKED = (
    b"HTTP/1.1 100 Continue\r\n\r\n"
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"2\r\nOK\r\n3;ext=1\r\n!!!\r\n0\r\nTrailer: x\r\n\r\n"
)


async def test_answers_of_each_framing_are_read_whole_and_the_connection_reused() -> None:
    answers = [
        CHUNKED,
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\n\r\noops!",
    ]
    async with server(lambda n: answers[n - 1]) as stats:
        client = PushClient(stats["url"], timeout=5)
        statuses = [await client.post(b'{"n": %d}' % n) for n in range(3)]
        client.close()
    assert statuses == [200, 204, 500]
    assert stats["bodies"] == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']
    assert stats["connections"] == 1


async def test_a_push_that_ends_after_close_keeps_no_connection() -> None:
    async with server(lambda n: b"HTTP/1.1 204 No Content\r\n\r\n") as stats:
        client = PushClient(stats["url"], timeout=5)
        push = asyncio.create_task(client.post(b"{}"))
        await asyncio.sleep(0)  # in flight
        client.close()  # the endpoint was changed meanwhile
        assert await push == 204
        assert client.idle == []


async def test_a_connection_the_endpoint_closed_is_not_reused() -> None:
    closing = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    async with server(lambda n: closing, close_after_each=True) as stats:
        client = PushClient(stats["url"], timeout=5)
        assert await client.post(b"{}") == 200
        await asyncio.sleep(0.1)  # the close reaches the client while the connection is idle
        assert await client.post(b"{}") == 200
        client.close()
    assert stats["connections"] == 2


async def test_http_1_0_and_close_delimited_answers_close_the_connection() -> None:
    answer = b"HTTP/1.0 202 Accepted\r\n\r\nbody to the end"
    async with server(lambda n: answer, close_after_each=True) as stats:
        client = PushClient(stats["url"], timeout=5)
        assert await client.post(b"{}") == 202
        assert client.idle == []
        client.close()


async def test_no_http_answer_is_an_error_not_a_status() -> None:
    async with server(lambda n: b"SSH-2.0-OpenSSH\r\n") as stats:
        with pytest.raises(BadResponse, match="status line"):
            await PushClient(stats["url"], timeout=5).post(b"{}")
    async with server(lambda n: b"", close_after_each=True) as stats:  # closes without a word
        with pytest.raises(EOFError):
            await PushClient(stats["url"], timeout=5).post(b"{}")
    async with server(lambda n: b"HTTP/1.1 200 OK\r\n") as stats:  # never ends its headers
        with pytest.raises(TimeoutError):
            await PushClient(stats["url"], timeout=0.5).post(b"{}")
    with pytest.raises(BadResponse, match="only http://"):
        await PushClient("https://example.invalid/push", timeout=5).post(b"{}")
