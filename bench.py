"""Benchmarks for blog.py: run `python bench.py` and read the table it prints.

It starts `python blog.py` on a loopback port with a throw-away SQLite database, and drives it
from this process with real clients. The machines here are shared and noisy: compare figures
taken in one run, not across runs.

Live features:
  sse fan-out      POST /api/blogs/ until the event reaches each of 1,000 SSE subscribers
  chat fan-out     one chat message until it reaches each of 200 clients in one room
  chat + stalled   the same, with one more client in the room that never reads
  idle memory      the server's RSS growth per idle SSE stream and per idle chat socket
"""

import asyncio
import base64
import contextlib
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import websockets

HERE = Path(__file__).parent
PASSWORD = "bench-password"


#### A server to measure


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`python blog.py` on a free loopback port, with an admin and helpers to make users."""

    def __init__(self, **env: str):
        self.port = free_port()
        self.url, self.ws_url = f"http://127.0.0.1:{self.port}", f"ws://127.0.0.1:{self.port}"
        folder = tempfile.mkdtemp(prefix="blog-bench-")
        self.env = {**os.environ, "DATABASE_URL": f"sqlite:///{folder}/bench.db", "PORT": str(self.port),
                    "SECRET_KEY": "bench-secret-key-of-a-decent-length-0123456789", "BCRYPT_ROUNDS": "4",
                    "SSE_PING_SECONDS": "600", "CHAT_MESSAGES_PER_10S": "1000000", **env}
        self.process = subprocess.Popen([sys.executable, str(HERE / "blog.py")], env=self.env, cwd=folder,
                                        stdout=None if os.environ.get("BENCH_VERBOSE") else subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        subprocess.run([sys.executable, str(HERE / "blog.py"), "create-admin", "root", "root@example.com"],
                       input=f"{PASSWORD}\n{PASSWORD}\n", text=True, env=self.env, cwd=folder,
                       capture_output=True, check=True)
        self.admin = self.login("root")

    def login(self, username: str) -> dict:
        token = httpx.post(self.url + "/api/auth/login", json={"username": username, "password": PASSWORD}).json()["access_token"]
        return {"token": token, "headers": {"Authorization": f"Bearer {token}"}}

    def user(self, name: str) -> dict:
        httpx.post(self.url + "/api/auth/register", json={"username": name, "email": f"{name}@x.io", "password": PASSWORD})
        return self.login(name)

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def percentiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p99 of latencies in seconds, as milliseconds."""
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


#### Live features


async def sse_fan_out(server: Server, subscribers: int = 1000, posts: int = 20) -> list[float]:
    """Latency from starting POST /api/blogs/ to each subscriber reading the event."""
    arrivals: dict[int, list[float]] = {}
    ready = asyncio.Semaphore(0)

    async def subscriber(client: httpx.AsyncClient):
        async with client.stream("GET", server.url + "/api/notifications/sse", headers=server.admin["headers"]) as response:
            lines = response.aiter_lines()
            await anext(lines)  # ": connected": subscribed
            ready.release()
            async for line in lines:
                if line.startswith("id: "):
                    arrivals.setdefault(int(line[4:]), []).append(time.perf_counter())

    author = server.user("sse-author")
    limits = httpx.Limits(max_connections=subscribers + 10)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client, httpx.AsyncClient() as poster:
        tasks = [asyncio.create_task(subscriber(client)) for _ in range(subscribers)]
        for _ in range(subscribers):
            await ready.acquire()
        latencies = []
        for n in range(posts):
            started = time.perf_counter()
            blog_id = (await poster.post(server.url + "/api/blogs/", json={"title": f"Post {n}", "content": "x"},
                                         headers=author["headers"])).json()["id"]
            while len(arrivals.get(blog_id, [])) < subscribers:
                await asyncio.sleep(0.001)
            latencies += [arrival - started for arrival in arrivals[blog_id]]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return latencies


def stalled_chat_client(server: Server, blog_id: int, token: str) -> socket.socket:
    """A chat client that completes the handshake and then never reads a byte."""
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect(("127.0.0.1", server.port))
    key = base64.b64encode(os.urandom(16)).decode()
    stalled.sendall((f"GET /api/blogs/{blog_id}/ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    assert stalled.recv(12) == b"HTTP/1.1 101"
    return stalled


async def chat_fan_out(server: Server, blog_id: int, user: dict, clients: int = 200, messages: int = 100,
                       text_size: int = 2000) -> list[float]:
    """Latency from sending a chat message to each of `clients` room members receiving it."""
    url = f"{server.ws_url}/api/blogs/{blog_id}/ws?token={user['token']}"
    sockets = [await websockets.connect(url, max_size=None) for _ in range(clients)]
    latencies = []
    try:
        for n in range(messages):
            started = time.perf_counter()
            await sockets[0].send(json.dumps({"text": f"{n:05}".ljust(text_size, "y")}))

            async def arrival(ws):
                await ws.recv()
                return time.perf_counter()
            latencies += [t - started for t in await asyncio.gather(*(arrival(ws) for ws in sockets))]
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets))
    return latencies


async def idle_memory(server: Server, blog_id: int, user: dict, count: int = 500) -> tuple[float, float]:
    """KiB of server RSS per idle SSE stream, and per idle chat socket."""
    before = server.rss_kib()
    limits = httpx.Limits(max_connections=count + 10)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client, contextlib.AsyncExitStack() as streams:
        lines = []  # kept referenced: a dropped line iterator closes its stream
        for _ in range(count):
            response = await streams.enter_async_context(
                client.stream("GET", server.url + "/api/notifications/sse", headers=server.admin["headers"]))
            lines.append(response.aiter_lines())
            await anext(lines[-1])  # ": connected"
        with_streams = server.rss_kib()
    url = f"{server.ws_url}/api/blogs/{blog_id}/ws?token={user['token']}"
    settled = server.rss_kib()
    sockets = [await websockets.connect(url) for _ in range(count)]
    with_sockets = server.rss_kib()
    await asyncio.gather(*(ws.close() for ws in sockets))
    return (with_streams - before) / count, (with_sockets - settled) / count


async def live_features() -> list[tuple[str, str]]:
    server, rows = Server(), []
    try:
        p50, p99 = percentiles(await sse_fan_out(server))
        rows.append(("sse fan-out, 1,000 subscribers", f"p50 {p50:7.1f} ms   p99 {p99:7.1f} ms"))
        user = server.user("chatter")
        blog_id = httpx.post(server.url + "/api/blogs/", json={"title": "Chat", "content": "x"},
                             headers=user["headers"]).json()["id"]
        httpx.post(server.url + f"/api/blogs/{blog_id}/approve", headers=server.admin["headers"])
        p50, p99 = percentiles(await chat_fan_out(server, blog_id, user))
        rows.append(("chat fan-out, 200 clients", f"p50 {p50:7.1f} ms   p99 {p99:7.1f} ms"))
        stalled = stalled_chat_client(server, blog_id, user["token"])
        p50_s, p99_s = percentiles(await chat_fan_out(server, blog_id, user, messages=300))
        stalled.close()
        rows.append(("chat fan-out, 200 clients + 1 stalled", f"p50 {p50_s:7.1f} ms   p99 {p99_s:7.1f} ms"
                     f"   (p99 ratio to no stall {p99_s / p99:.2f})"))
    finally:
        server.stop()
    fresh = Server()  # a heap that no earlier scenario has grown, so the growth is the connections'
    try:
        user = fresh.user("idler")
        blog_id = httpx.post(fresh.url + "/api/blogs/", json={"title": "Idle", "content": "x"},
                             headers=user["headers"]).json()["id"]
        per_stream, per_socket = await idle_memory(fresh, blog_id, user)
        rows.append(("idle memory per connection (500 each)", f"SSE {per_stream:5.1f} KiB   chat {per_socket:5.1f} KiB"))
    finally:
        fresh.stop()
    return rows


def print_table(title: str, rows: list[tuple[str, str]]) -> None:
    print(f"\n{title}")
    width = max(len(name) for name, _ in rows)
    for name, figures in rows:
        print(f"  {name.ljust(width)}   {figures}")


def main() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 1,000 streams need 1,000 descriptors a side
    print_table("Live features (one uvicorn worker, SQLite)", asyncio.run(live_features()))


if __name__ == "__main__":
    main()
