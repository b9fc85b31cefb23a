"""Benchmarks for blog.py: run `python bench.py` and read the table it prints.

It starts `python blog.py` on a loopback port with a throw-away SQLite database, and drives it
from this process with real clients. The machines here are shared and noisy: compare figures
taken in one run, not across runs.

REST, each as a ratio to a ceiling measured in the same sitting: a bare Starlette app on the
same uvicorn settings serving the same posts from memory (targets: list >= 0.40, get >= 0.30):
  list             GET /api/blogs/, 20 of 1,000 approved posts
  get              GET /api/blogs/{id}
  create           POST /api/blogs/ as a logged-in user
  health p99       GET /health while 8 clients log in without pause, to its idle p99 (target <= 3x)

Live features:
  sse fan-out      POST /api/blogs/ until the event reaches each of 1,000 SSE subscribers
  chat fan-out     one chat message until it reaches each of 200 clients in one room
  chat + stalled   the same, with one more client in the room that never reads
  idle memory      the server's RSS growth per idle SSE stream and per idle chat socket

Needs wrk (Debian: apt-get install wrk). `python bench.py rest` or `python bench.py live`
runs one half.
"""

import asyncio
import base64
import contextlib
import json
import os
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
        self.database_path = f"{folder}/bench.db"
        self.env = {**os.environ, "DATABASE_URL": f"sqlite:///{self.database_path}", "PORT": str(self.port),
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


def wait_healthy(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 20
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
    now = "2026-11-21T20:00:00.000Z"
    with sqlite3.connect(server.database_path, timeout=10) as connection:
        connection.executemany(
            "INSERT INTO blogs (title, content, images, status, author_id, created_at, updated_at) "
            "VALUES (?, ?, '[]', 'approved', ?, ?, ?)",
            [(f"Post number {n}", f"# Post {n}\n\n" + "Some words about Starlette. " * 20, author_id, now, now)
             for n in range(count)])


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
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
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
        posts_file = Path(tempfile.mkstemp(suffix=".json")[1])
        posts_file.write_text(json.dumps(posts))
        ceiling_port = free_port()
        ceiling_process = subprocess.Popen([sys.executable, __file__, "ceiling", str(ceiling_port), str(posts_file)],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        ceiling = f"http://127.0.0.1:{ceiling_port}"
        wait_healthy(ceiling + "/health", ceiling_process)
        rows = []
        app_rps, ceiling_rps, ratio = best_ratio(server.url + "/api/blogs/", ceiling + "/posts")
        rows.append(("list: GET /api/blogs/ (20 of 1,000)", f"{app_rps:7.0f} req/s  ceiling {ceiling_rps:7.0f}  ratio {ratio:.2f}  (target >= 0.40)"))
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


def health_under_login_load(rounds: int = 3) -> tuple[str, str]:
    """p99 of GET /health alone, then while 8 clients log in without pause (bcrypt at cost 12),
    `rounds` times over; one p99 is at the mercy of the machine's other work, so the median."""
    server = Server(BCRYPT_ROUNDS="12")
    ratios, login_rates = [], []
    try:
        server.user("busy")
        login = lua_post("/api/auth/login", {"username": "busy", "password": PASSWORD}, "none")
        for _ in range(rounds):
            idle = wrk(server.url + "/health", seconds=4, connections=1)["latency"][99]
            logins = subprocess.Popen([shutil.which("wrk"), "-t1", "-c8", "-d6s", "-s", login,
                                       server.url + "/api/auth/login"], stdout=subprocess.PIPE, text=True)
            time.sleep(1)  # let the logins get going before measuring
            loaded = wrk(server.url + "/health", seconds=4, connections=1)["latency"][99]
            login_rates.append(float(re.search(r"Requests/sec:\s+([\d.]+)", logins.communicate()[0]).group(1)))
            ratios.append(loaded / idle)
    finally:
        server.stop()
    return ("health p99 under 8 logging-in clients",
            f"ratio to idle: median {statistics.median(ratios):.2f} of {', '.join(f'{r:.2f}' for r in ratios)}"
            f"  (target <= 3)  logins {statistics.median(login_rates):.1f}/s")


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


def main(argv: list[str]) -> None:
    if argv[:1] == ["ceiling"]:
        return serve_ceiling(int(argv[1]), argv[2])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 1,000 streams need 1,000 descriptors a side
    if argv[:1] in ([], ["rest"]):
        print_table("REST (one uvicorn worker, SQLite; ratios to the ceiling in this run)", rest())
    if argv[:1] in ([], ["live"]):
        print_table("Live features (one uvicorn worker, SQLite)", asyncio.run(live_features()))


if __name__ == "__main__":
    main(sys.argv[1:])
