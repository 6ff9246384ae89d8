"""A small HTTP proxy for the egress tests, run as its own process.

``python -m tests.egress.proxy_server --port P --log FILE [--auth user:password]
[--map name=address ...]``. It tunnels ``CONNECT host:port`` and forwards absolute-form
requests (``GET http://host:port/path``), resolving a mapped name to its address (as a
corporate proxy resolves names its clients cannot). Each request it handles is appended to
``FILE`` as one JSON line: method, target, and the Proxy-Authorization it carried. With
``--auth`` a request without those credentials gets ``407``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import sys
from pathlib import Path


class Proxy:
    def __init__(self, log: Path, auth: str | None, names: dict[str, str]) -> None:
        self.log = log
        self.expected = "Basic " + base64.b64encode(auth.encode()).decode() if auth else None
        self.names = names

    def record(self, method: str, target: str, authorization: str | None) -> None:
        line = json.dumps({"method": method, "target": target, "authorization": authorization})
        with self.log.open("a") as f:  # the test reads it while this process runs
            f.write(line + "\n")

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = [line.split(":", 1) for line in lines[1:] if ":" in line]
                fields = {k.strip().lower(): v.strip() for k, v in headers}
                authorization = fields.get("proxy-authorization")
                self.record(method, target, authorization)
                if self.expected and authorization != self.expected:
                    writer.write(
                        b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                        b'Proxy-Authenticate: Basic realm="test"\r\nContent-Length: 0\r\n\r\n'
                    )
                    await writer.drain()
                    continue
                if method == "CONNECT":
                    await self.tunnel(target, reader, writer)
                    return
                await self.forward(method, target, headers, fields, reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    def address(self, host: str) -> str:
        return self.names.get(host, host)

    async def tunnel(
        self, target: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        host, port = target.rsplit(":", 1)
        try:
            up_reader, up_writer = await asyncio.open_connection(self.address(host), int(port))
        except OSError:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            return
        writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        await writer.drain()
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def forward(
        self,
        method: str,
        target: str,
        headers: list[list[str]],
        fields: dict[str, str],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        """One absolute-form request, sent upstream with ``Connection: close``; the answer is
        passed back as it comes and the client connection closed after it."""
        rest = target.split("://", 1)[1]
        authority, _, path = rest.partition("/")
        host, _, port = authority.partition(":")
        length = int(fields.get("content-length", "0"))
        body = await reader.readexactly(length) if length else b""
        kept = [
            f"{k}:{v}"
            for k, v in headers
            if k.strip().lower() not in ("proxy-authorization", "connection", "proxy-connection")
        ]
        head = "\r\n".join([f"{method} /{path} HTTP/1.1", *kept, "Connection: close", "", ""])
        up_reader, up_writer = await asyncio.open_connection(self.address(host), int(port or 80))
        up_writer.write(head.encode("latin-1") + body)
        await up_writer.drain()
        await pipe(up_reader, writer)
        raise ConnectionError("answered: this connection is done")


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--auth", default=None)
    parser.add_argument("--map", action="append", default=[])
    args = parser.parse_args(argv)
    names = dict(m.split("=", 1) for m in args.map)
    proxy = Proxy(args.log, args.auth, names)
    server = await asyncio.start_server(proxy.serve, "127.0.0.1", args.port)
    print("listening", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
