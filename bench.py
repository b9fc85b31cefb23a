"""Benchmarks for blog.py: run `python bench.py` and read the tables it prints.

It starts `python blog.py` on loopback ports with throw-away databases (SQLite, and a
PostgreSQL cluster of its own for the scale-out figures), and drives it from this process with
real clients. The machines here are shared and noisy: compare figures taken in one run, not
across runs. Everything it makes lives in one temporary folder, removed at the end.

rest     each as a ratio to a ceiling measured in the same sitting: a bare Starlette app on the
         same uvicorn settings serving the same posts from memory (targets: list >= 0.40,
         get >= 0.30): the front page, the front page while 10 likes a second arrive (>= 0.40),
         the uncached list (?author=), one blog, a new blog, and
         /health p99 while 8 clients log in without pause, to its idle p99 (target <= 3x)
feed     100,000 approved posts by 10,000 authors, of whom the reader follows 1,000: p50 and p99
         of a feed page, the first and one deep in it, and the first of a reader who follows 10
         (target p99 <= 20 ms)
search   100,000 approved posts of about 2.6 KB: p50 and p99 of ?q= for a missing word, a rare
         one, a common one and two words (target p99 <= 20 ms), and /health p99 while 4
         clients search without pause, to its idle p99 (target <= 3x)
live     SSE fan-out to 1,000 subscribers, chat fan-out to 200 clients (with and without a
         client that never reads), idle memory per connection
scale    PostgreSQL: the uncached list with 2 workers against 1 (expect >= 1.6x on 2 cores),
         SSE fan-out to 1,000 subscribers over 2 processes (p99 <= 250 ms) beside 1 process,
         chat to 200 clients over 2 processes (p99 <= 100 ms)

Needs wrk (Debian: apt-get install wrk) and, for `scale`, PostgreSQL's server (postgresql).
explain  the front page and a new blog with explain mode off and on (EXPLAIN=true), alternating in one
         sitting: on as a ratio to off (target >= 0.50: at most twice the time)
reads    100,000 posts (`reads --posts 1000000` for more) seeded with SQL, on SQLite and on
         PostgreSQL, each fresh (no statistics) and after ANALYZE: p50 and p99 of every read anyone
         can ask for, from the front page to the pending queue (target p99 <= 20 ms each; 100 ms
         on PostgreSQL without statistics), and the time and disk the seeding took.
         `--keep FOLDER` keeps the seeded databases there, and the next run reuses them.

`python bench.py rest` (or search, feed, reads, live, scale, explain) runs one part.
"""

import asyncio
import base64
import contextlib
import itertools
import json
import os
import random
import re
import resource
import shutil
import sqlite3
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import asyncpg
import httpx
import websockets

HERE = Path(__file__).parent
PASSWORD = "bench-password"
WORK = Path(tempfile.gettempdir())  # main() makes a folder of its own here, and removes it however it ends


#### A server to measure


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """`python blog.py` on a free loopback port, with an admin and helpers to make users.
    With no database_url, a new SQLite file; with one that already has the admin, a second process."""

    def __init__(self, database_url: str | None = None, *args: str, **env: str):
        self.port = free_port()
        self.url, self.ws_url = f"http://127.0.0.1:{self.port}", f"ws://127.0.0.1:{self.port}"
        self.database_path = WORK / f"bench-{self.port}.db"
        self.database_url = database_url or f"sqlite:///{self.database_path}"
        self.env = {**os.environ, "DATABASE_URL": self.database_url, "PORT": str(self.port),
                    "SECRET_KEY": "bench-secret-key-of-a-decent-length-0123456789", "BCRYPT_ROUNDS": "4",
                    "SSE_PING_SECONDS": "600", "CHAT_MESSAGES_PER_10S": "1000000",
                    "REGISTRATIONS_PER_ADDRESS": "1000000", "LIVE_CONNECTIONS_PER_USER": "1000000",
                    "WEBSOCKET_PING_SECONDS": "600", **env}
        self.process = subprocess.Popen([sys.executable, str(HERE / "blog.py"), *args], env=self.env, cwd=WORK,
                                        stdout=None if os.environ.get("BENCH_VERBOSE") else subprocess.DEVNULL, stderr=subprocess.STDOUT)
        wait_healthy(self.url + "/health", self.process)
        subprocess.run([sys.executable, str(HERE / "blog.py"), "create-admin", "root", "root@example.com"],
                       input=f"{PASSWORD}\n{PASSWORD}\n", text=True, env=self.env, cwd=WORK, capture_output=True)
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


def wait_healthy(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 180  # a million posts on SQLite: the app starts in 45 s on a busy machine
    while time.monotonic() < deadline:
        assert process.poll() is None, "the server exited"
        try:
            if httpx.get(url).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def percentiles(samples: list[float]) -> tuple[float, float]:
    """p50 and p99 of latencies in seconds, as milliseconds."""
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


#### REST: the app against a ceiling of the same framework and server serving from memory


def ceiling_app(posts: list[dict]):
    """The fastest this stack can answer the same requests: no database, no checks."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def list_posts(request):
        return JSONResponse({"items": posts, "next_cursor": str(posts[-1]["id"])})

    async def get_post(request):
        return JSONResponse(posts[0])

    async def create_post(request):
        body = await request.json()
        return JSONResponse(posts[0] | {"title": body["title"], "content": body["content"]}, 201)

    async def health(request):
        return JSONResponse({"status": "ok"})
    return Starlette(routes=[Route("/posts", list_posts), Route("/posts/one", get_post),
                             Route("/posts", create_post, methods=["POST"]), Route("/health", health)])


def serve_ceiling(port: int, posts_file: str) -> None:
    """`python bench.py ceiling PORT FILE`: serve the ceiling on the app's uvicorn settings."""
    import uvicorn
    uvicorn.run(ceiling_app(json.loads(Path(posts_file).read_text())), host="127.0.0.1", port=port)


def seed_approved_posts(server: Server, author_id: int, count: int = 1000) -> None:
    """Write `count` approved posts straight into the app's SQLite file, as if reviewed."""
    content = "Some words about Starlette. " * 20
    insert_posts(server, [(f"Post number {n}", f"# Post {n}\n\n" + content) for n in range(count)], author_id)


def insert_posts(server: Server, posts: list[tuple[str, str]], author_id: int) -> None:
    """Insert (title, content) pairs as approved blogs, with the words blog.py would index."""
    now = "2026-11-21T20:00:00.000Z"
    rows = [(title, content, " ".join(re.findall(r"[^\W_]+", (title + "\n" + content).casefold())), author_id, now, now)
            for title, content in posts]
    insert = ("INSERT INTO blogs (title, content, images, search_words, status, author_id, created_at, updated_at) "
              "VALUES ({}, {}, '[]', {}, 'approved', {}, {}, {})")
    if server.database_url.startswith("sqlite"):
        with sqlite3.connect(server.database_path, timeout=10) as connection:
            connection.executemany(insert.format(*["?"] * 6), rows)
        return

    async def copy():
        connection = await asyncpg.connect(server.database_url)
        await connection.executemany(insert.format(*[f"${n}" for n in range(1, 7)]), rows)
        await connection.execute("ANALYZE")  # as autovacuum would: fresh statistics, good plans
        await connection.close()
    asyncio.run(copy())


def wrk(url: str, seconds: float = 3, connections: int = 32, script: str | None = None) -> dict:
    """Run wrk; returns requests per second and the latency percentiles in milliseconds."""
    command = [shutil.which("wrk"), "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    command += ["-s", script] if script else []
    output = subprocess.run(command + [url], capture_output=True, text=True, check=True).stdout
    units = {"us": 0.001, "ms": 1, "s": 1000}
    latency = {int(p): float(v) * units[u] for p, v, u in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)$", output, re.M)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    assert not errors, f"{url}: {errors.group(1)} error responses"
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)), "latency": latency}


def lua_post(path: str, body: dict, token: str) -> str:
    """A wrk script that POSTs a JSON body with a bearer token."""
    script = Path(tempfile.mkstemp(suffix=".lua", dir=WORK)[1])
    script.write_text(f'wrk.method = "POST"\nwrk.body = {json.dumps(json.dumps(body))}\n'
                      f'wrk.headers["Content-Type"] = "application/json"\n'
                      f'wrk.headers["Authorization"] = "Bearer {token}"\n')
    return str(script)


def best_ratio(app_url: str, ceiling_url: str, script_app=None, script_ceiling=None, rounds: int = 2):
    """Alternate app and ceiling runs, keep each one's best, so passing noise hurts neither."""
    app = max(wrk(app_url, script=script_app)["rps"] for _ in range(rounds))
    ceiling = max(wrk(ceiling_url, script=script_ceiling)["rps"] for _ in range(rounds))
    return app, ceiling, app / ceiling


def rest() -> list[tuple[str, str]]:
    server = Server()
    ceiling_process = None
    try:
        author = server.user("author")
        me = httpx.get(server.url + "/api/auth/me", headers=author["headers"]).json()
        seed_approved_posts(server, me["id"])
        posts = httpx.get(server.url + "/api/blogs/").json()["items"]
        posts_file = Path(tempfile.mkstemp(suffix=".json", dir=WORK)[1])
        posts_file.write_text(json.dumps(posts))
        ceiling_port = free_port()
        ceiling_process = subprocess.Popen([sys.executable, __file__, "ceiling", str(ceiling_port), str(posts_file)],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ceiling = f"http://127.0.0.1:{ceiling_port}"
        wait_healthy(ceiling + "/health", ceiling_process)
        rows = []
        app_rps, ceiling_rps, ratio = best_ratio(server.url + "/api/blogs/", ceiling + "/posts")
        rows.append(("list: GET /api/blogs/ (20 of 1,000)", f"{app_rps:7.0f} req/s  ceiling {ceiling_rps:7.0f}  ratio {ratio:.2f}  (target >= 0.40)"))
        with likes_arriving(server, posts, per_second=10):
            app_rps, ceiling_rps, ratio = best_ratio(server.url + "/api/blogs/", ceiling + "/posts")
        rows.append(("list while 10 likes a second arrive", f"{app_rps:7.0f} req/s  ceiling {ceiling_rps:7.0f}  ratio {ratio:.2f}  (target >= 0.40)"))
        app_rps, ceiling_rps, ratio = best_ratio(server.url + "/api/blogs/?author=author", ceiling + "/posts")
        rows.append(("list, not cached: ?author= (20 of 1,000)", f"{app_rps:7.0f} req/s  ceiling {ceiling_rps:7.0f}  ratio {ratio:.2f}"))
        app_rps, ceiling_rps, ratio = best_ratio(server.url + f"/api/blogs/{posts[0]['id']}", ceiling + "/posts/one")
        rows.append(("get: GET /api/blogs/{id}", f"{app_rps:7.0f} req/s  ceiling {ceiling_rps:7.0f}  ratio {ratio:.2f}  (target >= 0.30)"))
        body = {"title": "Benchmarked", "content": "Some words about Starlette. " * 20}
        app_rps, ceiling_rps, ratio = best_ratio(server.url + "/api/blogs/", ceiling + "/posts",
                                                 lua_post("/api/blogs/", body, author["token"]),
                                                 lua_post("/posts", body, author["token"]))
        rows.append(("create: POST /api/blogs/", f"{app_rps:7.0f} req/s  ceiling {ceiling_rps:7.0f}  ratio {ratio:.2f}"))
    finally:
        server.stop()
        if ceiling_process:
            ceiling_process.terminate()
            ceiling_process.wait()
    rows.append(health_under_login_load())
    return rows


@contextlib.contextmanager
def likes_arriving(server: Server, posts: list[dict], per_second: float):
    """Likes and unlikes of the front page's posts, `per_second` of them, from 20 users, while the block runs."""
    import threading
    likers, stop = [server.user(f"liker{n}") for n in range(20)], threading.Event()

    def like_on():
        with httpx.Client(base_url=server.url) as client:
            for n in itertools.count():
                if stop.wait(1 / per_second):
                    return
                liker, post = likers[n % len(likers)], posts[n % len(posts)]
                client.request("PUT" if n // len(likers) % 2 == 0 else "DELETE", f"/api/blogs/{post['id']}/like",
                               headers=liker["headers"]).raise_for_status()
    thread = threading.Thread(target=like_on)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def health_under_login_load(rounds: int = 3) -> tuple[str, str]:
    """p99 of GET /health alone, then while 8 clients log in without pause (bcrypt at cost 12),
    `rounds` times over; one p99 is at the mercy of the machine's other work, so the median.
    Each client is a user of its own: one account's guesses in flight are limited to 5."""
    server = Server(BCRYPT_ROUNDS="12")
    ratios, login_rates = [], []
    try:
        bodies = []
        for n in range(8):
            server.user(f"busy{n}")
            bodies.append(json.dumps({"username": f"busy{n}", "password": PASSWORD}))
        login = Path(tempfile.mkstemp(suffix=".lua", dir=WORK)[1])
        login.write_text(f"bodies = {{{', '.join(json.dumps(body) for body in bodies)}}}\nn = 0\n"
                         "request = function() n = n + 1; return wrk.format('POST', '/api/auth/login', "
                         "{['Content-Type'] = 'application/json'}, bodies[n % #bodies + 1]) end\n")
        for _ in range(rounds):
            idle = wrk(server.url + "/health", seconds=4, connections=1)["latency"][99]
            logins = subprocess.Popen([shutil.which("wrk"), "-t1", "-c8", "-d6s", "-s", str(login), server.url],
                                      stdout=subprocess.PIPE, text=True)
            time.sleep(1)  # let the logins get going before measuring
            loaded = wrk(server.url + "/health", seconds=4, connections=1)["latency"][99]
            output = logins.communicate()[0]
            assert "Non-2xx" not in output, output
            login_rates.append(float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)))
            ratios.append(loaded / idle)
    finally:
        server.stop()
    return ("health p99 under 8 logging-in clients",
            f"ratio to idle: median {statistics.median(ratios):.2f} of {', '.join(f'{r:.2f}' for r in ratios)}"
            f"  (target <= 3)  logins {statistics.median(login_rates):.1f}/s")


#### Explain mode: what tracing every request costs


def explain(rounds: int = 3) -> list[tuple[str, str]]:
    """Two servers alike but for EXPLAIN, each with the same 1,000 posts; wrk runs against each in turn,
    `rounds` times, and each keeps its best (passing noise then hurts neither)."""
    servers = {"off": Server(), "on": Server(EXPLAIN="true")}
    try:
        scripts = {}
        for name, server in servers.items():
            author = server.user("author")
            seed_approved_posts(server, httpx.get(server.url + "/api/auth/me", headers=author["headers"]).json()["id"])
            scripts[name] = lua_post("/api/blogs/", {"title": "Benchmarked", "content": "Some words. " * 50}, author["token"])
        rows = []
        for what, script in [("front page: GET /api/blogs/ (20 of 1,000)", False), ("a write: POST /api/blogs/", True)]:
            best = dict.fromkeys(servers, 0.0)
            for _ in range(rounds):
                for name, server in servers.items():
                    rps = wrk(server.url + "/api/blogs/", script=scripts[name] if script else None)["rps"]
                    best[name] = max(best[name], rps)
            rows.append((what, f"off {best['off']:7.0f} req/s  on {best['on']:7.0f} req/s  "
                               f"on/off {best['on'] / best['off']:.2f}  (target >= 0.50)"))
        return rows
    finally:
        for server in servers.values():
            server.stop()


#### Live features


async def raw_get(url: str, path: str, headers: dict) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Send GET `path` on a connection of its own, with no HTTP client library: reading then costs
    the bench as little as it can, so that what is measured is the server."""
    address = urlsplit(url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port, limit=2 ** 20)
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    writer.write(f"GET {path} HTTP/1.1\r\nHost: {address.hostname}\r\n{lines}\r\n".encode())
    return reader, writer


async def sse_fan_out(servers: list[Server], subscribers: int = 1000, posts: int = 20) -> list[float]:
    """Latency from starting POST /api/blogs/ (to the first server) to each subscriber reading the
    event; the subscribers are spread evenly over the servers."""
    server, arrivals, everyone_heard = servers[0], {}, asyncio.Event()

    async def subscriber(url: str, opened: asyncio.Future):
        reader, writer = await raw_get(url, "/api/notifications/sse", server.admin["headers"])
        await reader.readuntil(b": connected")
        opened.set_result(writer)
        while line := await reader.readline():
            if line.startswith(b"data: "):
                heard = arrivals.setdefault(int(re.search(rb'"blog_id": (\d+)', line)[1]), [])
                heard.append(time.perf_counter())
                if len(heard) == subscribers:
                    everyone_heard.set()

    author = server.user("sse-author")
    opened = [asyncio.get_running_loop().create_future() for _ in range(subscribers)]
    tasks = [asyncio.create_task(subscriber(servers[n % len(servers)].url, opened[n])) for n in range(subscribers)]
    writers = await asyncio.gather(*opened)
    latencies = []
    async with httpx.AsyncClient() as poster:
        for n in range(posts):
            everyone_heard.clear()
            started = time.perf_counter()
            blog_id = (await poster.post(server.url + "/api/blogs/", json={"title": f"Post {n}", "content": "x"},
                                         headers=author["headers"])).json()["id"]
            await everyone_heard.wait()
            latencies += [arrival - started for arrival in arrivals[blog_id]]
    for task, writer in zip(tasks, writers):
        task.cancel()
        writer.close()
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


async def raw_chat_socket(url: str, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A chat socket with no WebSocket library: only the handshake, then frames read by hand."""
    key = base64.b64encode(os.urandom(16)).decode()
    reader, writer = await raw_get(url, path, {"Upgrade": "websocket", "Connection": "Upgrade",
                                               "Sec-WebSocket-Key": key, "Sec-WebSocket-Version": "13"})
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    return reader, writer


async def next_text_frame(reader: asyncio.StreamReader) -> bytes:
    """The payload of the next text frame the server sends (its pings are skipped)."""
    while True:
        opcode, length = await reader.readexactly(2)
        length &= 0x7F
        if length >= 126:
            length = int.from_bytes(await reader.readexactly(2 if length == 126 else 8), "big")
        payload = await reader.readexactly(length)
        if opcode & 0x0F == 1:
            return payload


async def chat_fan_out(servers: list[Server], blog_id: int, user: dict, clients: int = 200, messages: int = 100,
                       text_size: int = 2000) -> list[float]:
    """Latency from sending a chat message (through the first server) to each of `clients` room
    members receiving it; the members are spread evenly over the servers."""
    path = f"/api/blogs/{blog_id}/ws?token={user['token']}"
    members = [await raw_chat_socket(servers[n % len(servers)].url, path) for n in range(clients)]
    latencies = []
    async with websockets.connect(servers[0].ws_url + path, max_size=None) as sender:
        for n in range(messages):
            started = time.perf_counter()
            await sender.send(json.dumps({"text": f"{n:05}".ljust(text_size, "y")}))

            async def arrival(reader):
                await next_text_frame(reader)
                return time.perf_counter()
            latencies += [t - started for t in await asyncio.gather(*(arrival(reader) for reader, _ in members))]
            await sender.recv()  # its own copy
    for _, writer in members:
        writer.close()
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
        p50, p99 = percentiles(await sse_fan_out([server]))
        rows.append(("sse fan-out, 1,000 subscribers", f"p50 {p50:7.1f} ms   p99 {p99:7.1f} ms"))
        user = server.user("chatter")
        blog_id = httpx.post(server.url + "/api/blogs/", json={"title": "Chat", "content": "x"},
                             headers=user["headers"]).json()["id"]
        httpx.post(server.url + f"/api/blogs/{blog_id}/approve", headers=server.admin["headers"])
        p50, p99 = percentiles(await chat_fan_out([server], blog_id, user))
        rows.append(("chat fan-out, 200 clients", f"p50 {p50:7.1f} ms   p99 {p99:7.1f} ms"))
        stalled = stalled_chat_client(server, blog_id, user["token"])
        p50_s, p99_s = percentiles(await chat_fan_out([server], blog_id, user, messages=300))
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


#### Search: 100,000 posts


def words_of_a_language(count: int = 20_000) -> list[str]:
    """Made-up words, the same every run."""
    rng = random.Random(1)
    return ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=rng.randint(3, 9))) for _ in range(count)]


def seed_search_posts(server: Server, author_id: int, count: int = 100_000, words_per_post: int = 400) -> dict:
    """Approved posts of about 2.6 KB of made-up words, drawn as in a real language (Zipf's law:
    the most common word is one in ten, most words are rare); returns words of each kind to search."""
    vocabulary, rng = words_of_a_language(), random.Random(2)
    weights = list(itertools.accumulate(1 / rank for rank in range(1, len(vocabulary) + 1)))
    posts = [(f"Post {n}", " ".join(rng.choices(vocabulary, cum_weights=weights, k=words_per_post))) for n in range(count)]
    insert_posts(server, posts, author_id)
    return {"missing": "qqqzzzq", "rare": vocabulary[5000], "common": vocabulary[0],
            "two words": f"{vocabulary[0]} {vocabulary[3]}"}


def search() -> list[tuple[str, str]]:
    server, rows = Server(), []
    try:
        author = server.user("author")
        me = httpx.get(server.url + "/api/auth/me", headers=author["headers"]).json()
        started = time.monotonic()
        queries = seed_search_posts(server, me["id"])
        rows.append(("seeding 100,000 posts", f"{time.monotonic() - started:.0f} s"))
        for kind, words in queries.items():
            latency = wrk(server.url + "/api/blogs/?" + urlencode({"q": words}), seconds=3, connections=1)["latency"]
            rows.append((f"search, {kind} ({words!r})", f"p50 {latency[50]:6.2f} ms   p99 {latency[99]:6.2f} ms"
                                                        "   (target p99 <= 20 ms)"))
        paths = [f"/api/blogs/?{urlencode({'q': words})}" for words in queries.values()]
        for label, load in [("4 searching clients", paths), ("4 clients asking /health (the floor)", ["/health"])]:
            ratios = health_p99_ratios(server, load)
            rows.append((f"health p99 under {label}", f"ratio to idle: median {statistics.median(ratios):.2f} of "
                                                     f"{', '.join(f'{r:.2f}' for r in ratios)}  (target <= 3)"))
    finally:
        server.stop()
    return rows


def health_p99_ratios(server: Server, paths: list[str], rounds: int = 3) -> list[float]:
    """/health's p99 while 4 clients request `paths` in turn without pause, over its idle p99,
    `rounds` times. The loading clients run on the last core and the server on the others, so
    that wrk's own appetite for CPU is not counted against the app."""
    script = Path(tempfile.mkstemp(suffix=".lua", dir=WORK)[1])
    script.write_text(f"paths = {{{', '.join(json.dumps(path) for path in paths)}}}\nn = 0\n"
                      "request = function() n = n + 1; return wrk.format('GET', paths[n % #paths + 1]) end\n")
    cores = sorted(os.sched_getaffinity(0))
    for thread in Path(f"/proc/{server.process.pid}/task").iterdir():
        os.sched_setaffinity(int(thread.name), cores[:-1] or cores)
    ratios = []
    for _ in range(rounds):
        idle = wrk(server.url + "/health", seconds=3, connections=1)["latency"][99]
        load = subprocess.Popen(["taskset", "-c", str(cores[-1]), shutil.which("wrk"), "-t1", "-c4", "-d5s",
                                 "-s", str(script), server.url], stdout=subprocess.DEVNULL)
        time.sleep(1)  # let the load get going before measuring
        ratios.append(wrk(server.url + "/health", seconds=3, connections=1)["latency"][99] / idle)
        load.wait()
    return ratios


#### The feed: 1,000 followed authors among 10,000, and 100,000 approved posts


def feed() -> list[tuple[str, str]]:
    server = Server()
    try:
        reader, few = server.user("reader"), server.user("few")
        now, content = "2026-11-21T20:00:00.000Z", "Some words about Starlette and more. " * 60
        with sqlite3.connect(server.database_path, timeout=10) as connection:
            connection.executemany(
                "INSERT INTO users (username, email, password_hash, role, created_at) VALUES (?, ?, 'x', 'user', ?)",
                [(f"author{n}", f"author{n}@x.io", now) for n in range(10_000)])
            first = connection.execute("SELECT MIN(id) FROM users WHERE username LIKE 'author%'").fetchone()[0]
            me = connection.execute("SELECT id FROM users WHERE username = 'reader'").fetchone()[0]
            me_too = connection.execute("SELECT id FROM users WHERE username = 'few'").fetchone()[0]
            connection.executemany(
                "INSERT INTO blogs (title, content, images, search_words, status, author_id, created_at, updated_at) "
                "VALUES (?, ?, '[]', '', 'approved', ?, ?, ?)",
                [(f"Post {n}", content, first + n % 10_000, now, now) for n in range(100_000)])
            connection.executemany("INSERT INTO follows (follower_id, followed_id, created_at) VALUES (?, ?, ?)",
                                   [(me, first + n, now) for n in range(0, 10_000, 10)]
                                   + [(me_too, first + n, now) for n in range(5, 10_000, 1_000)])
            connection.execute("ANALYZE")
        rows = []
        for label, who, query in [("first page", reader, ""), ("a page deep in it", reader, "?cursor=50000"),
                                  ("following 10 authors, first page", few, "")]:
            headers = Path(tempfile.mkstemp(suffix=".lua", dir=WORK)[1])
            headers.write_text(f'wrk.headers["Authorization"] = "Bearer {who["token"]}"\n')
            latency = wrk(server.url + "/api/feed" + query, seconds=3, connections=1, script=str(headers))["latency"]
            rows.append((f"feed, {label}", f"p50 {latency[50]:6.2f} ms   p99 {latency[99]:6.2f} ms   (target p99 <= 20 ms)"))
        return rows
    finally:
        server.stop()


#### Scale-out: PostgreSQL, several processes


@contextlib.contextmanager
def postgres_cluster(settings: str = "", folder: Path | None = None):
    """A PostgreSQL cluster on a loopback port, in `folder` (WORK/postgres unless told; made there
    unless it is already, as a copy of one kept by `reads --keep`); yields a database URL."""
    initdb = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))), None) or shutil.which("initdb")
    assert initdb, "scale needs PostgreSQL's server (Debian: apt-get install postgresql)"
    folder, as_owner, port = folder or WORK / "postgres", [], free_port()
    folder.mkdir(exist_ok=True)
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(folder, "postgres")
        os.chmod(folder.parent, 0o755)
        as_owner = ["runuser", "-u", "postgres", "--"]
    pg_ctl = [*as_owner, str(Path(initdb).with_name("pg_ctl")), "-D", str(folder / "data")]
    if not (folder / "data").exists():
        subprocess.run([*as_owner, initdb, "-D", str(folder / "data"), "-U", "postgres", "--auth=trust"],
                       check=True, capture_output=True)
    subprocess.run([*pg_ctl, "-l", str(folder / "log"), "-w", "start", "-o",
                    f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c max_connections=300 {settings}"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*pg_ctl, "-m", "fast", "stop"], capture_output=True)


def uncached_list_with_workers(database_url: str, workers: int) -> float:
    """Requests per second of the uncached list (?author=) served by `workers` processes."""
    server = Server(database_url, "--workers", str(workers))
    try:
        return max(wrk(server.url + "/api/blogs/?author=author", seconds=4, connections=64)["rps"] for _ in range(2))
    finally:
        server.stop()


async def scale_live(database_url: str) -> list[tuple[str, str]]:
    rows, a = [], Server(database_url)
    b = Server(database_url)
    try:
        p50, p99 = percentiles(await sse_fan_out([a]))
        rows.append(("sse fan-out, 1,000 subscribers, 1 process", f"p50 {p50:7.1f} ms   p99 {p99:7.1f} ms"))
        p50, p99 = percentiles(await sse_fan_out([a, b]))
        rows.append(("sse fan-out, 1,000 subscribers over 2 processes", f"p50 {p50:7.1f} ms   p99 {p99:7.1f} ms"
                                                                       "   (target p99 <= 250 ms)"))
        user = a.user("chatter")
        blog_id = httpx.post(a.url + "/api/blogs/", json={"title": "Chat", "content": "x"}, headers=user["headers"]).json()["id"]
        httpx.post(a.url + f"/api/blogs/{blog_id}/approve", headers=a.admin["headers"])
        p50, p99 = percentiles(await chat_fan_out([a, b], blog_id, user))
        rows.append(("chat fan-out, 200 clients over 2 processes", f"p50 {p50:7.1f} ms   p99 {p99:7.1f} ms"
                                                                  "   (target p99 <= 100 ms)"))
    finally:
        a.stop()
        b.stop()
    return rows


def scale() -> list[tuple[str, str]]:
    with postgres_cluster() as database_url:
        first = Server(database_url)  # makes the tables, the admin and the posts
        try:
            author = first.user("author")
            me = httpx.get(first.url + "/api/auth/me", headers=author["headers"]).json()
            insert_posts(first, [(f"Post number {n}", "Some words about Starlette. " * 20) for n in range(1000)], me["id"])
        finally:
            first.stop()
        one, two = uncached_list_with_workers(database_url, 1), uncached_list_with_workers(database_url, 2)
        rows = [("list, not cached (?author=), PostgreSQL", f"1 worker {one:6.0f} req/s   2 workers {two:6.0f} req/s"
                                                           f"   ratio {two / one:.2f}  (expect >= 1.6)")]
        return rows + asyncio.run(scale_live(database_url))


#### Every read anyone can ask for, on both databases: 100,000 posts (or --posts N) seeded with SQL


READS_NOW = "2026-11-21T20:00:00.000Z"
# 1,000 authors (user1..user1000) and 10,000 readers who all follow user1; 100,000 posts (or
# --posts N) of about 2.4 KB, one in ten pending, each one of 1,000 bodies of made-up words drawn
# as in a language (Zipf: "w1" is one word in ten) plus a word of its own ("tag777"); 10,000
# comments on the newest post; reader10 follows 10 authors, reader1000 all 1,000. The same SQL on
# both databases.
READS_SEED = [
    """INSERT INTO users (username, email, password_hash, role, created_at)
       WITH RECURSIVE n (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 11000)
       SELECT 'user' || i, 'user' || i || '@x.io', 'x', 'user', '{now}' FROM n""",
    """INSERT INTO blogs (title, content, images, search_words, status, author_id, created_at, updated_at)
       WITH RECURSIVE n (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {posts})
       SELECT 'Post ' || i, words || ' tag' || i, '[]', 'post ' || i || ' ' || words || ' tag' || i,
              CASE WHEN i % 10 = 0 THEN 'pending' ELSE 'approved' END,
              (SELECT id FROM users WHERE username = 'user1') + i % 1000, '{now}', '{now}'
       FROM n JOIN bench_bodies ON body = (i % 1000) * 7919 % 1000 ORDER BY i""",
    """INSERT INTO comments (blog_id, author_id, text, created_at)
       WITH RECURSIVE n (i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000)
       SELECT (SELECT MAX(id) FROM blogs WHERE status = 'approved'), (SELECT id FROM users WHERE username = 'user2'),
              'Comment ' || i, '{now}' FROM n""",
    """INSERT INTO follows (follower_id, followed_id, created_at)
       SELECT r.id, u.id, '{now}' FROM users r JOIN users u ON u.username LIKE 'user%'
       WHERE (r.username = 'reader10' AND u.id < (SELECT id FROM users WHERE username = 'user11'))
          OR (r.username = 'reader1000' AND u.id <= (SELECT id FROM users WHERE username = 'user1000'))""",
    """INSERT INTO follows (follower_id, followed_id, created_at)
       SELECT u.id, (SELECT id FROM users WHERE username = 'user1'), '{now}' FROM users u
       WHERE u.id > (SELECT id FROM users WHERE username = 'user1000') AND u.username LIKE 'user%'""",
]


def reads_bodies(count: int = 1000, words: int = 400) -> list[tuple[int, str]]:
    vocabulary, rng = [f"w{rank}" for rank in range(1, 20_001)], random.Random(2)
    weights = list(itertools.accumulate(1 / rank for rank in range(1, len(vocabulary) + 1)))
    return [(n, " ".join(rng.choices(vocabulary, cum_weights=weights, k=words))) for n in range(count)]


def seed_reads(server: Server, posts: int) -> None:
    """Run READS_SEED on the app's database (stopped meanwhile on PostgreSQL: its full-text index is
    dropped for the load and built again in one go, 3 times faster than entry by entry)."""
    statements = [statement.format(now=READS_NOW, posts=posts) for statement in READS_SEED]
    if server.database_url.startswith("sqlite"):
        with sqlite3.connect(server.database_path, timeout=30) as connection:
            connection.execute("CREATE TEMP TABLE bench_bodies (body INTEGER, words TEXT)")
            connection.executemany("INSERT INTO bench_bodies VALUES (?, ?)", reads_bodies())
            for statement in statements:
                connection.execute(statement)
        return

    async def load():
        connection = await asyncpg.connect(server.database_url)
        await connection.execute("DROP INDEX blogs_search; CREATE TEMP TABLE bench_bodies (body INTEGER, words TEXT)")
        await connection.executemany("INSERT INTO bench_bodies VALUES ($1, $2)", reads_bodies())
        for statement in statements:
            await connection.execute(statement)
        schema = (HERE / "schema.sql").read_text()
        await connection.execute(re.search(r"CREATE INDEX IF NOT EXISTS blogs_search .*;", schema)[0])
        await connection.close()
    asyncio.run(load())


def read_paths(server: Server, posts: int) -> list[tuple[str, str, dict]]:
    """(label, path, headers) of every read measured."""
    newest = httpx.get(server.url + "/api/blogs/").json()["items"][0]["id"]
    reader10, reader1000 = server.login("reader10")["headers"], server.login("reader1000")["headers"]
    return [("front page (cached 1 s)", "/api/blogs/", {}), ("?author= (uncached list)", "/api/blogs/?author=user7", {}),
            ("?q= missing word", "/api/blogs/?q=qqqzzzq", {}), ("?q= rare word (1 old post)", "/api/blogs/?q=tag777", {}),
            ("?q= common word (every post)", "/api/blogs/?q=w1", {}), ("?q= two common words", "/api/blogs/?q=w1+w4", {}),
            ("?q= 1 post in 70 (w3000)", "/api/blogs/?q=w3000", {}),
            ("?q= 1 post in 70, a deep cursor", f"/api/blogs/?q=w3000&cursor={posts // 2}", {}),
            ("a deep cursor", f"/api/blogs/?cursor={posts // 2}", {}),
            ("one blog", f"/api/blogs/{newest}", {}), ("comments (10,000 on the blog)", f"/api/blogs/{newest}/comments", {}),
            ("feed, following 10", "/api/feed", reader10),
            ("feed, following 10, a deep cursor", f"/api/feed?cursor={posts // 2}", reader10),
            ("feed, following 1,000", "/api/feed", reader1000),
            ("followers (10,000)", "/api/users/user1/followers", {}), ("pending (10,000)", "/api/blogs/pending", server.admin["headers"])]


def measure_reads(server: Server, paths: list, requests: int = 200) -> dict[str, tuple[float, float]]:
    """p50 and p99 of each read, asked `requests` times in a row by one client, after one request
    that is not counted (it reads the pages a fresh database has on disk only: a cold cache)."""
    figures = {}
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for label, path, headers in paths:
            client.get(path, headers=headers).raise_for_status()
            samples = []
            for _ in range(requests):
                started = time.perf_counter()
                client.get(path, headers=headers).raise_for_status()
                samples.append(time.perf_counter() - started)
            figures[label] = percentiles(samples)
    return figures


def seeded(folder: Path, name: str, seed) -> dict:
    """What seed() made in folder/name (a database), and its time and size: seeded once, and kept
    there for the next run when the folder is --keep's."""
    done = folder / f"{name}.json"
    if not done.exists():
        started = time.monotonic()
        size = seed(folder / name)
        done.write_text(json.dumps({"seconds": time.monotonic() - started, "bytes": size}))
    return json.loads(done.read_text())


def seed_sqlite(path: Path, posts: int) -> int:
    server = Server(f"sqlite:///{path}")
    server.database_path = path
    try:
        for name in ("reader10", "reader1000"):
            server.user(name)
        seed_reads(server, posts)
    finally:
        server.stop()
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return connection.execute("PRAGMA page_count").fetchone()[0] * connection.execute("PRAGMA page_size").fetchone()[0]


def seed_postgres(folder: Path, posts: int) -> int:
    with postgres_cluster("-c autovacuum=off", folder) as database_url:
        server = Server(database_url)
        for name in ("reader10", "reader1000"):
            server.user(name)
        server.stop()
        seed_reads(server, posts)

        async def size():
            connection = await asyncpg.connect(database_url)
            try:
                return await connection.fetchval("SELECT pg_database_size(current_database())")
            finally:
                await connection.close()
        return asyncio.run(size())


def reads_on(database_url: str, analyze: str) -> dict[str, dict]:
    """Measure every read on the seeded database, before and after `analyze`."""
    server = Server(database_url)
    try:
        paths = read_paths(server, POSTS)
        results = {"fresh": measure_reads(server, paths)}
        if database_url.startswith("sqlite"):
            with sqlite3.connect(urlsplit(database_url).path[1:]) as connection:
                connection.execute(analyze)
            server.stop()  # SQLite reads the statistics when a connection opens
            server = Server(database_url)
        else:
            async def run():
                connection = await asyncpg.connect(database_url)
                await connection.execute(analyze)
                await connection.close()
            asyncio.run(run())
        results["analyzed"] = measure_reads(server, paths)
        return results
    finally:
        server.stop()


POSTS = 100_000  # --posts N


def reads(keep: Path | None) -> list[tuple[str, str]]:
    """The table of every read; with --keep FOLDER, the seeded databases are kept there and reused
    (left as seeded: SQLite's statistics are dropped before a run, PostgreSQL's folder is copied)."""
    started, folder = time.monotonic(), keep or WORK
    sqlite = seeded(folder, f"reads-{POSTS}.db", lambda path: seed_sqlite(path, POSTS))
    with sqlite3.connect(folder / f"reads-{POSTS}.db") as connection:
        connection.execute("DROP TABLE IF EXISTS sqlite_stat1")
    sqlite["reads"] = reads_on(f"sqlite:///{folder / f'reads-{POSTS}.db'}", "ANALYZE")
    postgres = seeded(folder, f"postgres-{POSTS}", lambda path: seed_postgres(path, POSTS))
    cluster = folder / f"postgres-{POSTS}"
    if keep:
        subprocess.run(["cp", "-a", str(cluster), str(WORK / "postgres")], check=True)
        cluster = WORK / "postgres"
    with postgres_cluster("-c autovacuum=off", cluster) as database_url:  # no statistics until VACUUM ANALYZE
        postgres["reads"] = reads_on(database_url, "VACUUM ANALYZE")
    rows = [("read (p50 / p99 ms; target p99 <= 20)",
             "SQLite            SQLite, ANALYZE   PostgreSQL, none  PostgreSQL, VACUUM ANALYZE")]
    for label in sqlite["reads"]["fresh"]:
        cells = [sqlite["reads"]["fresh"][label], sqlite["reads"]["analyzed"][label],
                 postgres["reads"]["fresh"][label], postgres["reads"]["analyzed"][label]]
        rows.append((label, " ".join(f"{a:6.2f} / {b:6.2f}{' !' if b > 20 else '  '}" for a, b in cells)))
    for name, made in (("SQLite", sqlite), ("PostgreSQL", postgres)):
        rows.append((f"seeding {name}", f"{made['seconds']:.0f} s, {made['bytes'] / 2 ** 20:,.0f} MiB on disk"))
    rows.append(("the whole part", f"{time.monotonic() - started:.0f} s"))
    return rows


def print_table(title: str, rows: list[tuple[str, str]]) -> None:
    print(f"\n{title}")
    width = max(len(name) for name, _ in rows)
    for name, figures in rows:
        print(f"  {name.ljust(width)}   {figures}")


def main(argv: list[str]) -> None:
    global WORK, POSTS
    if argv[:1] == ["ceiling"]:
        return serve_ceiling(int(argv[1]), argv[2])
    if "--posts" in argv:
        POSTS = int(argv.pop(argv.index("--posts") + 1))
        argv.remove("--posts")
    keep = None
    if "--keep" in argv:
        keep = Path(argv.pop(argv.index("--keep") + 1)).resolve()
        argv.remove("--keep")
        keep.mkdir(exist_ok=True)
    WORK = Path(tempfile.mkdtemp(prefix="blog-bench-"))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 1,000 streams need 1,000 descriptors a side
    try:
        if argv[:1] in ([], ["rest"]):
            print_table("REST (one uvicorn worker, SQLite; ratios to the ceiling in this run)", rest())
        if argv[:1] in ([], ["search"]):
            print_table("Search (one uvicorn worker, SQLite, 100,000 approved posts)", search())
        if argv[:1] in ([], ["feed"]):
            print_table("Feed (one uvicorn worker, SQLite, 100,000 posts by 10,000 authors, 1,000 followed)", feed())
        if argv[:1] in ([], ["live"]):
            print_table("Live features (one uvicorn worker, SQLite)", asyncio.run(live_features()))
        if argv[:1] in ([], ["explain"]):
            print_table("Explain mode (one uvicorn worker, SQLite): off and on, in one sitting", explain())
        if argv[:1] in ([], ["reads"]):
            print_table(f"Every read, {POSTS:,} posts, one uvicorn worker, one client in a row", reads(keep))
        if argv[:1] in ([], ["scale"]):
            print_table("Scale-out (PostgreSQL; processes on this one machine)", scale())
    finally:
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
