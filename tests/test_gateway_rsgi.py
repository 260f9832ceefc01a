"""gateway.rsgi: the RSGI bridge's own translation (the served app is covered end to end by
tests/test_gateway*.py, which run `clickstream gateway`, i.e. this bridge, under Granian)."""

from __future__ import annotations

from typing import Any

from gateway.rsgi import _Exchange, client_address


def test_client_address_v4_v6_and_missing() -> None:
    assert client_address("127.0.0.1:5123") == ("127.0.0.1", 5123)
    assert client_address("[::1]:443") == ("::1", 443)
    assert client_address("::1:443") == ("::1", 443)
    assert client_address("") is None


class Protocol:
    """Records what the bridge asks of Granian's RSGI protocol object."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.responses: list[tuple[int, list[tuple[str, str]], bytes]] = []

    async def __call__(self) -> bytes:
        return b"".join(self.chunks)

    def __aiter__(self) -> Any:
        return self._iterate()

    async def _iterate(self) -> Any:
        for chunk in self.chunks:
            yield chunk

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.responses.append((status, headers, body))


async def test_sized_body_is_one_message_and_response_is_one_call() -> None:
    protocol = Protocol([b'{"a":', b"1}"])
    exchange = _Exchange(protocol, sized=True)
    message = await exchange.receive()
    assert (message["body"], message["more_body"]) == (b'{"a":1}', False)
    await exchange.send({"type": "http.response.start", "status": 202, "headers": [(b"x-a", b"1")]})
    await exchange.send({"type": "http.response.body", "body": b"ok", "more_body": True})
    assert protocol.responses == []
    await exchange.send({"type": "http.response.body", "body": b"!"})
    assert protocol.responses == [(202, [("x-a", "1")], b"ok!")]


async def test_chunked_body_is_streamed_so_the_reader_can_stop_at_its_limit() -> None:
    exchange = _Exchange(Protocol([b"ab", b"cd"]), sized=False)
    messages = [await exchange.receive() for _ in range(3)]
    assert [(m["body"], m["more_body"]) for m in messages] == [
        (b"ab", True),
        (b"cd", True),
        (b"", False),
    ]
