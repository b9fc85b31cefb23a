"""A blog platform API in one Starlette file.

Accounts with JWT access and refresh tokens, three roles (user, approver, admin), blog posts
that wait for an approver before the world sees them, feature requests and saved drafts.
The whole contract is in SPEC.md; the tables are in schema.sql.

    python blog.py                               serve on http://127.0.0.1:8000 (SQLite, blog.db)
    python blog.py --demo                        the same, with one account per role and a few posts
    python blog.py create-admin NAME EMAIL       make the first admin (asks for the password)
"""

import argparse
import asyncio
import getpass
import hashlib
import json
import logging
import math
import os
import re
import secrets
import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from functools import wraps
from http import HTTPStatus
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import bcrypt
import databases
import jwt
import uvicorn
from openapi_ui_bundles import swagger_ui as swagger_ui_files
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.config import Config
from starlette.convertors import Convertor, IntegerConvertor, register_url_convertor
from starlette.datastructures import CommaSeparatedStrings
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Match, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

#### Configuration: read once from the environment (or a .env file), nowhere else

# Starlette's Config warns when the file is missing, and a .env is optional here.
config = Config(".env" if os.path.isfile(".env") else None)

DATABASE_URL = config("DATABASE_URL", default="sqlite:///blog.db")
SECRET_KEY = config("SECRET_KEY", default="")
ACCESS_TOKEN_MINUTES = config("ACCESS_TOKEN_MINUTES", cast=int, default=30)
REFRESH_TOKEN_DAYS = config("REFRESH_TOKEN_DAYS", cast=int, default=7)
CORS_ORIGINS = list(config("CORS_ORIGINS", cast=CommaSeparatedStrings, default=""))
SSE_PING_SECONDS = config("SSE_PING_SECONDS", cast=float, default=15)
CHAT_MESSAGES_PER_10S = config("CHAT_MESSAGES_PER_10S", cast=int, default=20)  # one socket's flood limit
BCRYPT_ROUNDS = config("BCRYPT_ROUNDS", cast=int, default=12)  # tests lower it; 12 costs ~0.25 s
HOST = config("HOST", default="127.0.0.1")
PORT = config("PORT", cast=int, default=8000)
# Whose X-Forwarded-For to believe: only the proxy in front (Caddy, on this machine). Anyone
# else could claim any address and slip past the per-address login throttle.
FORWARDED_ALLOW_IPS = config("FORWARDED_ALLOW_IPS", default="127.0.0.1")

SECRET_KEY_IS_RANDOM = not SECRET_KEY
SECRET_KEY = SECRET_KEY or secrets.token_urlsafe(32)
SCHEMA_PATH = Path(__file__).with_name("schema.sql")
MAX_BODY_BYTES = 1024 * 1024
LOGIN_WINDOW_SECONDS = 15 * 60
LOGIN_FAILURES_PER_ACCOUNT = 5  # within the window; then 429 until the oldest failure ages out
LOGIN_FAILURES_PER_ADDRESS = 20
FAILED_LOGIN_KEYS_KEPT = 10_000  # past this many accounts and addresses, stale ones are forgotten
ROLES = ("user", "approver", "admin")
LISTENER_QUEUE_SIZE = 100  # events or chat messages waiting for one slow listener before it is cut off
CHAT_MAX_FRAME_BYTES = 64 * 1024  # a bigger WebSocket frame closes the socket with 1009
SHUTDOWN_GRACE_SECONDS = 3  # open streams never end by themselves, so shutdown cuts them off

log = logging.getLogger("uvicorn.error")  # uvicorn's logger, so our lines show up in its output


def utc_now() -> str:
    """The current time as stored and sent: "2026-11-21T20:17:24.123Z"."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


#### Database: the connection, the tables, and the queries used more than once


class SQLiteConnection(sqlite3.Connection):
    """An SQLite connection set up for a web server: every connection runs these as it opens
    (a PRAGMA is per connection, and the command line opens connections of its own)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.execute("PRAGMA foreign_keys = ON")  # off by default in SQLite, for history's sake
        self.execute("PRAGMA busy_timeout = 5000")  # wait up to 5 s for a writer instead of failing
        self.execute("PRAGMA journal_mode = WAL")  # readers never wait for the writer
        self.execute("PRAGMA synchronous = NORMAL")  # safe with WAL, and much faster


class SQLiteDatabase(databases.Database):
    """SQLite through one connection, held from connect() to disconnect() and shared by all.

    Left alone, `databases` opens a new SQLite connection, with a thread of its own, for most
    queries: that costs far more than the query. SQLite writes one at a time anyway, so the
    requests' queries simply take turns on this one.
    """

    async def connect(self) -> None:
        await super().connect()
        self.held = super().connection()
        await self.held.__aenter__()

    def connection(self) -> databases.core.Connection:
        return self.held

    async def disconnect(self) -> None:
        await self.held.__aexit__(None, None, None)
        await super().disconnect()


def make_database(url: str) -> databases.Database:
    """SQLite gets its held connection and PRAGMAs; PostgreSQL, the connection pool of `databases`."""
    if url.startswith("sqlite"):
        return SQLiteDatabase(url, factory=SQLiteConnection)
    return databases.Database(url)


database = make_database(DATABASE_URL)


async def create_tables() -> None:
    """Run schema.sql, one statement at a time (neither driver takes several at once)."""
    schema = SCHEMA_PATH.read_text()
    if database.url.dialect == "postgresql":
        # The one dialect difference: SQLite's INTEGER PRIMARY KEY counts up by itself.
        schema = re.sub(r"\bid\s+INTEGER PRIMARY KEY", "id INTEGER GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", schema)
    schema = re.sub(r"--.*", "", schema)
    for statement in schema.split(";"):
        if statement.strip():
            await database.execute(statement)


class IdConvertor(IntegerConvertor):
    """The {blog_id:id} in a route: up to 9 digits, so that a longer number is an unknown page
    (404) rather than an overflow of the database's integers (a 500)."""

    regex = "[0-9]{1,9}"


register_url_convertor("id", IdConvertor())

# Column lists and queries used more than once. Only constants are joined into SQL here:
# every value travels as a :name parameter.
USER_COLUMNS = "id, username, email, role, created_at"
USER_BY_ID = "SELECT " + USER_COLUMNS + " FROM users WHERE id = :id"
USER_BY_NAME = "SELECT " + USER_COLUMNS + " FROM users WHERE LOWER(username) = LOWER(:username)"
BLOG_SELECT = """
    SELECT b.id, b.title, b.content, b.images, b.status, b.reject_reason, b.author_id,
           u.username AS author, b.created_at, b.updated_at
    FROM blogs b JOIN users u ON u.id = b.author_id
"""
BLOG_BY_ID = BLOG_SELECT + " WHERE b.id = :id"
FEATURE_REQUEST_COLUMNS = "id, title, description, status, priority, author_id, created_at, updated_at"


def user_out(row) -> dict:
    """A user as clients see it: never the password hash."""
    return {"id": row["id"], "username": row["username"], "email": row["email"],
            "role": row["role"], "created_at": row["created_at"]}


def blog_out(row) -> dict:
    """A blog as clients see it; the reject reason only while it is rejected."""
    blog = dict(row)
    blog["images"] = json.loads(blog["images"])
    if blog["status"] != "rejected":
        del blog["reject_reason"]
    return blog


#### Request bodies: JSON parsing, and the declarations that validate every body
#
# Each body is declared once, as a JSON Schema object; `validate` enforces the few keywords used
# here (type, required, minLength, maxLength, pattern, enum, minimum, maximum, maxItems, items).
# Patterns are anchored and matched whole, so "alice\n" is not a username.

URL_LIST = {"type": "array", "maxItems": 10, "items": {  # http(s), a host name or IPv4 address, an optional port
    "type": "string", "maxLength": 2000, "pattern": r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/\S*)?$"}}
TITLE = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": r"^.*\S.*$"}

REGISTER_BODY = {"type": "object", "required": ["username", "email", "password"],
                 "examples": [{"username": "alice", "email": "alice@example.com", "password": "correct horse"}],
                 "properties": {
    "username": {"type": "string", "pattern": r"^[A-Za-z0-9_.-]{3,32}$"},
    "email": {"type": "string", "maxLength": 254, "pattern": r"^[^@\s]+@[^@\s]+\.[^@\s]+$"},
    "password": {"type": "string", "minLength": 8, "maxLength": 72,
                 "description": "8 characters to 72 bytes of UTF-8 (bcrypt's limit)"},
}}
LOGIN_BODY = {"type": "object", "required": ["username", "password"],
              "examples": [{"username": "alice", "password": "correct horse"}], "properties": {
    "username": {"type": "string", "maxLength": 254, "description": "the username or the email"},
    "password": {"type": "string", "maxLength": 1000},
}}
REFRESH_BODY = {"type": "object", "required": ["refresh_token"], "examples": [{"refresh_token": "eyJhbGciOi..."}],
                "properties": {
    "refresh_token": {"type": "string", "maxLength": 2000},
}}
ROLE_BODY = {"type": "object", "required": ["role"], "examples": [{"role": "approver"}], "properties": {
    "role": {"type": "string", "enum": list(ROLES)},
}}
BLOG_BODY = {"type": "object", "required": ["title", "content"],
             "examples": [{"title": "Hello", "content": "# Hello\n\nMy *first* post.", "images": []}], "properties": {
    "title": TITLE,
    "content": {"type": "string", "minLength": 1, "maxLength": 100_000},
    "images": URL_LIST,
}}
REJECT_BODY = {"type": "object", "examples": [{"reason": "Please cite your sources."}], "properties": {
    "reason": {"type": "string", "maxLength": 2000},
}}
FEATURE_REQUEST_BODY = {"type": "object", "required": ["title", "description"],
                        "examples": [{"title": "Dark mode", "description": "Easier on the eyes.", "priority": 4}],
                        "properties": {
    "title": TITLE,
    "description": {"type": "string", "minLength": 1, "maxLength": 5000},
    "priority": {"type": "integer", "minimum": 1, "maximum": 5},
}}
TRIAGE_BODY = {"type": "object", "required": ["status"], "examples": [{"status": "accepted", "priority": 5}],
               "properties": {
    "status": {"type": "string", "enum": ["pending", "accepted", "declined"]},
    "priority": {"type": "integer", "minimum": 1, "maximum": 5},
}}
CHAT_MESSAGE_BODY = {"type": "object", "required": ["text"], "examples": [{"text": "Nice post!"}], "properties": {
    "text": {"type": "string", "minLength": 1, "maxLength": 2000},
}}
DRAFT_BODY = {"type": "object", "examples": [{"title": "Half a thought", "content": "To be continued"}],
              "properties": {
    "title": {"type": "string", "maxLength": 200},
    "content": {"type": "string", "maxLength": 100_000},
    "images": URL_LIST,
}}


def invalid(field: str, problem: str) -> HTTPException:
    """A 422 that names the field, e.g. "title: must be at most 200 characters."."""
    return HTTPException(422, f"{field}: {problem}.")


def parse_json(raw: bytes | str):
    """Parse JSON strictly: NaN, Infinity, 5000-digit numbers and deep nesting are refused."""
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    try:
        return json.loads(raw, parse_constant=refuse)
    except (ValueError, RecursionError):  # JSONDecodeError, bad UTF-8 and huge ints are ValueErrors
        raise HTTPException(400, "The body is not valid JSON.")


async def read_raw_body(request: Request) -> bytes:
    """Read the body, refusing with 413 as soon as it passes 1 MiB.

    Starlette's own max_body_size answers in plain text when Content-Length is too large,
    and every error here is JSON, so the limit is kept here, where bodies are read.
    """
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise HTTPException(413, "The body is larger than 1 MiB.")
    return bytes(body)


async def read_body(request: Request, schema: dict) -> dict:
    """Parse the JSON body and validate it against `schema`; no body at all counts as {}."""
    raw = await read_raw_body(request)
    return validate(parse_json(raw) if raw else {}, schema)


def validate(body, schema: dict) -> dict:
    """Check a parsed body against its declaration; return the declared fields it holds."""
    if not isinstance(body, dict):
        raise HTTPException(422, "The body must be a JSON object.")
    for name in schema.get("required", []):
        if name not in body:
            raise invalid(name, "this field is required")
    return {name: check_value(name, body[name], rule)
            for name, rule in schema["properties"].items() if name in body}


def check_value(name: str, value, rule: dict):
    """Check one value against its rule and return it, or raise a 422 naming the field."""
    kind = rule["type"]
    if kind == "string":
        check_string(name, value, rule)
    elif kind == "integer":
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # JSON has one number type: 5.0 is the integer 5
        if not isinstance(value, int) or isinstance(value, bool):
            raise invalid(name, "must be an integer")
        if not rule.get("minimum", -math.inf) <= value <= rule.get("maximum", math.inf):
            raise invalid(name, f"must be from {rule['minimum']} to {rule['maximum']}")
    elif kind == "array":
        if not isinstance(value, list):
            raise invalid(name, "must be a list")
        if len(value) > rule["maxItems"]:
            raise invalid(name, f"must have at most {rule['maxItems']} items")
        for index, item in enumerate(value):
            check_value(f"{name}[{index}]", item, rule["items"])
    return value


def is_storable(text: str) -> bool:
    """False for a NUL or a lone surrogate: legal in JSON, but no database stores them as text."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def check_string(name: str, value, rule: dict) -> None:
    """Check a string's type, length, characters, pattern and allowed values."""
    if not isinstance(value, str):
        raise invalid(name, "must be a string")
    low, high = rule.get("minLength", 0), rule.get("maxLength", MAX_BODY_BYTES)
    if not low <= len(value) <= high:
        raise invalid(name, f"must be {low} to {high} characters long")
    if not is_storable(value):
        raise invalid(name, "must not contain NUL characters or lone surrogates")
    if "pattern" in rule and not re.fullmatch(rule["pattern"], value):
        raise invalid(name, "is not in the expected form")
    if "enum" in rule and value not in rule["enum"]:
        raise invalid(name, "must be one of " + ", ".join(rule["enum"]))


#### Pages: ?limit= and ?cursor= for every list, newest first
#
# A cursor is the id of the last item on the previous page: after a page ending with id 42,
# "?cursor=42" gives the items with ids below 42. Clients should pass it back untouched, so
# that it can change form one day without breaking them.


LIMIT = {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}
CURSOR = {"type": "string", "pattern": "^[0-9]{1,9}$", "description": "next_cursor of the previous page"}


def page_params(request: Request) -> tuple[int, int | None]:
    """Read ?limit= (1-100, default 20) and ?cursor=; the cursor comes back as an id."""
    try:
        limit = int(request.query_params.get("limit", LIMIT["default"]))
    except ValueError:
        raise invalid("limit", "must be an integer")
    check_value("limit", limit, LIMIT)
    cursor = request.query_params.get("cursor")
    if cursor is None:
        return limit, None
    return limit, int(check_value("cursor", cursor, CURSOR))


def page_of(rows: list, limit: int, item_out) -> dict:
    """Turn `limit + 1` fetched rows into a page: the extra row only says a next page exists."""
    items = [item_out(row) for row in rows[:limit]]
    next_cursor = None
    if len(rows) > limit:
        next_cursor = str(items[-1]["id"])
    return {"items": items, "next_cursor": next_cursor}


#### Security: passwords, tokens, failed-login throttling and the role decorator


def hash_password(password: str) -> str:
    """Hash a password with bcrypt; slow on purpose, so call it in a worker thread."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(BCRYPT_ROUNDS)).decode()


def check_password(password: str, password_hash: str) -> bool:
    """Whether the password matches; always one full bcrypt check, so timing tells nothing."""
    encoded = password.encode()
    # bcrypt 5 raises on more than 72 bytes. Such a password was never accepted, so it cannot
    # match; checking its first 72 bytes anyway keeps the time the same.
    matches = bcrypt.checkpw(encoded[:72], password_hash.encode())
    return matches and len(encoded) <= 72


# bcrypt is slow on purpose, so it runs in threads of its own, off the event loop. More hashes
# at once than spare cores, or hashes at the event loop's priority, would still take the CPU
# from the loop, and so from every other request: logins wait their turn here instead.
def lower_thread_priority() -> None:
    """Make the calling thread give way to the event loop (Linux sets niceness per thread)."""
    if sys.platform == "linux":
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


BCRYPT_THREADS = ThreadPoolExecutor(max(1, (os.cpu_count() or 2) - 1), "bcrypt", lower_thread_priority)


async def in_bcrypt_thread(function, *args):
    """Run a bcrypt function in one of the BCRYPT_THREADS."""
    return await asyncio.get_running_loop().run_in_executor(BCRYPT_THREADS, function, *args)


# Checked when the username is unknown, so an unknown user costs as much as a wrong password.
DUMMY_PASSWORD_HASH = hash_password(secrets.token_urlsafe(16))


def unauthorized(detail: str) -> HTTPException:
    """A 401 with the header that tells clients to send a bearer token."""
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


# Token claims, e.g. an access token: {"sub": "42", "type": "access", "iat": 1763756244, "exp": 1763758044}.
# A refresh token adds "fam" (its login's family) and "jti" (so that no two are alike).
# "type" keeps the two apart: a refresh token is no access token, and the other way round.
JWT_ALGORITHM = "HS256"


def make_token(user_id: int, kind: str, lifetime: timedelta, **claims) -> str:
    """Sign a token of `kind` ("access" or "refresh") for a user."""
    now = datetime.now(UTC)
    claims |= {"sub": str(user_id), "type": kind, "iat": now, "exp": now + lifetime}
    return jwt.encode(claims, SECRET_KEY, algorithm=JWT_ALGORITHM)


def read_token(token: str, kind: str) -> dict:
    """Verify a token and return its claims; any fault is a 401."""
    try:
        claims = jwt.decode(token, SECRET_KEY, algorithms=[JWT_ALGORITHM],  # pinned: no "alg": "none"
                            options={"require": ["exp", "iat", "sub", "type"]})
    except jwt.ExpiredSignatureError:
        raise unauthorized("Your token has expired; refresh it or log in again.")
    except jwt.InvalidTokenError:
        raise unauthorized("Your token is not valid; log in again.")
    if claims["type"] != kind:
        raise unauthorized(f"This is not an {kind} token.")
    return claims


def token_hash(token: str) -> str:
    """What the database keeps of a refresh token: its SHA-256, never the token."""
    return hashlib.sha256(token.encode()).hexdigest()


async def issue_tokens(user_id: int, family: str | None = None) -> dict:
    """Make an access token and a refresh token; the refresh token is remembered by its hash."""
    family = family or secrets.token_urlsafe(16)
    refresh_lifetime = timedelta(days=REFRESH_TOKEN_DAYS)
    refresh_token = make_token(user_id, "refresh", refresh_lifetime, fam=family, jti=secrets.token_urlsafe(16))
    await database.execute(
        "INSERT INTO refresh_tokens (token_hash, user_id, family, expires_at) "
        "VALUES (:token_hash, :user_id, :family, :expires_at)",
        {"token_hash": token_hash(refresh_token), "user_id": user_id, "family": family,
         "expires_at": (datetime.now(UTC) + refresh_lifetime).isoformat()})
    return {"access_token": make_token(user_id, "access", timedelta(minutes=ACCESS_TOKEN_MINUTES)),
            "refresh_token": refresh_token, "token_type": "bearer", "expires_in": ACCESS_TOKEN_MINUTES * 60}


async def user_for_token(token: str) -> dict:
    """The user an access token belongs to, read fresh so a role change applies at once."""
    claims = read_token(token, "access")
    user = await database.fetch_one(USER_BY_ID, {"id": int(claims["sub"])})
    if user is None:
        raise unauthorized("This account no longer exists.")
    return dict(user)


async def authenticate(request: Request, query_token: bool = False) -> dict | None:
    """The user who sent the request, None if no token came, 401 if a bad one did."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme and scheme.lower() != "bearer":
        raise unauthorized("Send your access token as 'Authorization: Bearer <token>'.")
    if not token and query_token:
        token = request.query_params.get("token", "")
    return await user_for_token(token) if token else None


def requires_role(*roles: str, query_token: bool = False):
    """Let a handler run only for a logged-in user with one of `roles`: 401 or 403 otherwise.

    The user is in request.state.user. query_token=True also takes ?token=, for the clients
    that cannot send headers (a browser's EventSource, a WebSocket).
    """
    def decorator(handler):
        @wraps(handler)
        async def guarded(request: Request) -> Response:
            user = await authenticate(request, query_token)
            if user is None:
                raise unauthorized("Log in first: this needs an access token.")
            if user["role"] not in roles:
                raise HTTPException(403, f"This needs the role {' or '.join(roles)}.")
            request.state.user = user
            return await handler(request)
        guarded.roles = roles  # read by the OpenAPI document
        return guarded
    return decorator


# "user:alice" or "ip:203.0.113.7" -> when its recent logins failed. One process holds it,
# like the live features; several workers would each count their own.
failed_logins: dict[str, list[float]] = {}


def check_login_throttle(keys: list[str]) -> None:
    """Refuse with 429 while an account or an address has failed too often lately."""
    now = time.monotonic()
    for key in keys:
        recent = [t for t in failed_logins.pop(key, []) if now - t < LOGIN_WINDOW_SECONDS]
        if recent:  # only keys with recent failures stay, so every kept list has a last entry
            failed_logins[key] = recent
        allowed = LOGIN_FAILURES_PER_ACCOUNT if key.startswith("user:") else LOGIN_FAILURES_PER_ADDRESS
        if len(recent) >= allowed:
            retry_after = math.ceil(recent[0] + LOGIN_WINDOW_SECONDS - now)
            raise HTTPException(429, "Too many failed logins; wait before trying again.",
                                headers={"Retry-After": str(retry_after)})


def record_failed_login(keys: list[str]) -> None:
    """Count one failed login against each key, forgetting stale keys so memory stays bounded."""
    if len(failed_logins) > FAILED_LOGIN_KEYS_KEPT:
        now = time.monotonic()
        for key in [k for k, times in failed_logins.items() if now - times[-1] >= LOGIN_WINDOW_SECONDS]:
            del failed_logins[key]
    for key in keys:
        failed_logins.setdefault(key, []).append(time.monotonic())


#### Real-time plumbing: the notification broadcaster and the chat rooms
#
# Every listener (a reviewer's event stream, a chat socket) has its own bounded queue, and
# publishing only ever puts into queues without waiting. A listener whose queue is full has
# stopped reading: it is cut off, so it can never slow the publisher or the other listeners.

# One queue per open notification stream.
subscribers: set[asyncio.Queue] = set()
# Blog id -> one outbox per socket in that blog's chat room.
rooms: dict[int, set[asyncio.Queue]] = {}


def offer(queue: asyncio.Queue, item) -> bool:
    """Queue an item without waiting. A full queue is emptied and gets None, "you fell behind"."""
    try:
        queue.put_nowait(item)
        return True
    except asyncio.QueueFull:
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(None)
        return False


@contextmanager
def subscribe() -> Iterator[asyncio.Queue]:
    """Receive every published event while the block runs, however it ends."""
    queue = asyncio.Queue(maxsize=LISTENER_QUEUE_SIZE)
    subscribers.add(queue)
    log.info("Notification stream opened (%d open)", len(subscribers))
    try:
        yield queue
    finally:
        subscribers.discard(queue)
        log.info("Notification stream closed (%d open)", len(subscribers))


def publish(event: dict) -> None:
    """Send an event to every subscriber; one that fell behind is dropped."""
    for queue in list(subscribers):
        if not offer(queue, event):
            subscribers.discard(queue)


def pending_event(blog) -> dict:
    """The event that a blog waits for review:
    {"type": "blog_pending", "blog_id": 5, "title": "New Blog", "author_id": 2}."""
    return {"type": "blog_pending", "blog_id": blog["id"], "title": blog["title"], "author_id": blog["author_id"]}


@asynccontextmanager
async def join_room(blog_id: int, websocket: WebSocket) -> AsyncIterator[asyncio.Queue]:
    """Accept a socket into a blog's chat room while the block runs; yields this member's outbox.

    It joins before the handshake completes, so a client whose socket is open misses nothing.
    A task of its own sends the outbox, so no member ever waits on another's socket.
    """
    outbox = asyncio.Queue(maxsize=LISTENER_QUEUE_SIZE)
    rooms.setdefault(blog_id, set()).add(outbox)
    sender = None
    try:
        await websocket.accept()
        sender = asyncio.create_task(send_outbox(websocket, outbox))
        yield outbox
    finally:
        if sender:
            sender.cancel()
        room = rooms.get(blog_id, set())
        room.discard(outbox)
        if not room:
            rooms.pop(blog_id, None)


FELL_BEHIND = "You fell behind the room; reconnect."


async def send_outbox(websocket: WebSocket, outbox: asyncio.Queue) -> None:
    """Send a member's messages in order; close its socket with 1013 once it has fallen behind."""
    try:
        while (message := await outbox.get()) is not None:
            await websocket.send_json(message)
        await websocket.close(code=1013, reason=FELL_BEHIND)
    except (WebSocketDisconnect, RuntimeError):  # the socket closed first: nobody is left to tell
        pass


def room_broadcast(blog_id: int, message: dict) -> None:
    """Queue a message for everyone in a blog's chat room; a member who fell behind is dropped."""
    room = rooms.get(blog_id, set())
    for outbox in list(room):
        if not offer(outbox, message):
            room.discard(outbox)


#### Auth: register, login, refresh, logout, me


async def add_user(fields: dict, role: str):
    """Store a user from a validated registration body; None if the name or email is taken."""
    if len(fields["password"].encode()) > 72:
        raise invalid("password", "must be at most 72 bytes (bcrypt's limit)")
    password_hash = await in_bcrypt_thread(hash_password, fields["password"])
    # ON CONFLICT DO NOTHING: a taken name or email returns no row, on SQLite and PostgreSQL alike.
    return await database.fetch_one(
        "INSERT INTO users (username, email, password_hash, role, created_at) "
        "VALUES (:username, :email, :password_hash, :role, :now) "
        "ON CONFLICT DO NOTHING RETURNING " + USER_COLUMNS,
        {"username": fields["username"], "email": fields["email"].lower(), "password_hash": password_hash,
         "role": role, "now": utc_now()})


async def register(request: Request) -> Response:
    """Create an account with the user role; a role asked for in the body is ignored."""
    user = await add_user(await read_body(request, REGISTER_BODY), "user")
    if user is None:
        raise HTTPException(409, "That username or email is already taken.")
    return JSONResponse(user_out(user), 201)


async def read_login_form(request: Request) -> dict:
    """Login takes JSON, or the HTML form that the OAuth2 password flow posts."""
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        try:
            form = dict(parse_qsl((await read_raw_body(request)).decode(), errors="strict"))
        except UnicodeDecodeError:
            raise HTTPException(400, "The form is not valid UTF-8.")
        return validate(form, LOGIN_BODY)
    return await read_body(request, LOGIN_BODY)


async def login(request: Request) -> Response:
    """Exchange a username (or email) and a password for an access and a refresh token."""
    fields = await read_login_form(request)
    keys = ["user:" + fields["username"].lower(), "ip:" + (request.client.host if request.client else "")]
    check_login_throttle(keys)
    user = await database.fetch_one(
        "SELECT id, password_hash FROM users WHERE LOWER(username) = :login OR email = :login",
        {"login": fields["username"].lower()})
    password_hash = user["password_hash"] if user else DUMMY_PASSWORD_HASH
    if not await in_bcrypt_thread(check_password, fields["password"], password_hash) or user is None:
        record_failed_login(keys)
        raise unauthorized("Wrong username or password.")  # the same words for both, on purpose
    failed_logins.pop(keys[0], None)
    await database.execute("DELETE FROM refresh_tokens WHERE expires_at < :now",
                           {"now": datetime.now(UTC).isoformat()})
    return JSONResponse(await issue_tokens(user["id"]))


async def refresh(request: Request) -> Response:
    """Trade a refresh token for new tokens; each refresh token works once."""
    token = (await read_body(request, REFRESH_BODY))["refresh_token"]
    claims = read_token(token, "refresh")
    # One statement marks it used, so two racing refreshes cannot both win.
    claimed = await database.fetch_one(
        "UPDATE refresh_tokens SET used_at = :now WHERE token_hash = :token_hash AND used_at IS NULL "
        "RETURNING user_id, family", {"now": utc_now(), "token_hash": token_hash(token)})
    if claimed is None:
        # Used before: it was stolen, or its owner's copy was. Revoke every token of that login.
        await database.execute("UPDATE refresh_tokens SET used_at = :now WHERE family = :family AND used_at IS NULL",
                               {"now": utc_now(), "family": claims["fam"]})
        raise unauthorized("This refresh token was already used; log in again.")
    return JSONResponse(await issue_tokens(claimed["user_id"], claimed["family"]))


@requires_role(*ROLES)
async def logout(request: Request) -> Response:
    """Revoke a refresh token of yours; access tokens run out on their own within minutes."""
    token = (await read_body(request, REFRESH_BODY))["refresh_token"]
    await database.execute(
        "UPDATE refresh_tokens SET used_at = :now WHERE token_hash = :token_hash AND user_id = :user_id",
        {"now": utc_now(), "token_hash": token_hash(token), "user_id": request.state.user["id"]})
    return Response(status_code=204)


@requires_role(*ROLES)
async def me(request: Request) -> Response:
    """Show the logged-in user."""
    return JSONResponse(user_out(request.state.user))


#### Users: roles, set by admins only


async def set_role(username: str, role: str) -> dict:
    """Give a user a role; the last admin cannot step down, or nobody could manage roles again."""
    user = await database.fetch_one(USER_BY_NAME, {"username": username})
    if user is None:
        raise HTTPException(404, f"There is no user {username!r}.")
    if user["role"] == "admin" and role != "admin":
        admins = await database.fetch_val("SELECT COUNT(*) FROM users WHERE role = 'admin'")
        if admins == 1:
            raise HTTPException(409, "This is the last admin; make another admin first.")
    await database.execute("UPDATE users SET role = :role WHERE id = :id", {"role": role, "id": user["id"]})
    return user_out(dict(user) | {"role": role})


@requires_role("admin")
async def make_admin(request: Request) -> Response:
    """Make a user an admin."""
    return JSONResponse(await set_role(request.path_params["username"], "admin"))


@requires_role("admin")
async def change_role(request: Request) -> Response:
    """Give a user the role user, approver or admin."""
    fields = await read_body(request, ROLE_BODY)
    return JSONResponse(await set_role(request.path_params["username"], fields["role"]))


#### Blogs: write, review, read


def may_see(blog, user: dict | None) -> bool:
    """Approved blogs are public; the others only to their author and to reviewers."""
    return (blog["status"] == "approved" or user is not None
            and (user["id"] == blog["author_id"] or user["role"] in ("approver", "admin")))


async def get_visible_blog(blog_id: int, user: dict | None) -> dict:
    """Fetch a blog the user may see; 404 otherwise, so a hidden blog's existence stays hidden."""
    blog = await database.fetch_one(BLOG_BY_ID, {"id": blog_id})
    if blog is None or not may_see(blog, user):
        raise HTTPException(404, f"There is no blog {blog_id}.")
    return dict(blog)


class PublicCache:
    """What everyone is sent alike, kept as sent: the public list's first pages, approved blogs.

    An approved blog never changes (it can only be deleted), so these go stale only when a
    blog is approved or an approved one deleted; then `clear` empties the cache and moves its
    version on. A response computed under an older version is not kept: a reader racing a
    writer can never leave a stale entry behind.
    """

    def __init__(self, max_bytes: int = 32 * 1024 * 1024):
        self.entries: dict[str, bytes] = {}
        self.version, self.size, self.max_bytes = 0, 0, max_bytes

    def response(self, key: str) -> Response | None:
        body = self.entries.get(key)
        return None if body is None else Response(body, media_type="application/json")

    def keep(self, key: str, response: Response, version: int) -> None:
        if version == self.version and self.size + len(response.body) <= self.max_bytes:
            self.entries[key] = response.body
            self.size += len(response.body)

    def clear(self) -> None:
        self.version += 1
        self.entries.clear()
        self.size = 0


public_cache = PublicCache()


def like_pattern(text: str) -> str:
    """A LIKE pattern that finds `text` anywhere, its own % and _ taken literally."""
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def list_blogs(request: Request) -> Response:
    """List approved blogs, newest first; ?q= searches title and content, ?author= by username."""
    limit, before = page_params(request)
    query, author = request.query_params.get("q"), request.query_params.get("author")
    front_page = f"front page of {limit}" if not (before or query or author) else None  # the hot path
    if front_page and (cached := public_cache.response(front_page)):
        return cached
    version = public_cache.version
    rows = await database.fetch_all(BLOG_SELECT + r"""
        WHERE b.status = 'approved'
          AND (CAST(:before AS INTEGER) IS NULL OR b.id < :before)
          AND (CAST(:author AS TEXT) IS NULL OR LOWER(u.username) = LOWER(:author))
          AND (CAST(:pattern AS TEXT) IS NULL OR LOWER(b.title) LIKE :pattern ESCAPE '\'
                                              OR LOWER(b.content) LIKE :pattern ESCAPE '\')
        ORDER BY b.id DESC LIMIT :limit""",
        {"before": before, "author": author, "pattern": like_pattern(query) if query else None,
         "limit": limit + 1})
    response = JSONResponse(page_of(rows, limit, blog_out))
    if front_page:
        public_cache.keep(front_page, response, version)
    return response


@requires_role("approver", "admin")
async def list_pending_blogs(request: Request) -> Response:
    """List the blogs waiting for review, newest first."""
    limit, before = page_params(request)
    rows = await database.fetch_all(
        BLOG_SELECT + " WHERE b.status = 'pending' AND (CAST(:before AS INTEGER) IS NULL OR b.id < :before) "
        "ORDER BY b.id DESC LIMIT :limit", {"before": before, "limit": limit + 1})
    return JSONResponse(page_of(rows, limit, blog_out))


@requires_role(*ROLES)
async def create_blog(request: Request) -> Response:
    """Submit a blog; it waits as pending until an approver or admin reviews it."""
    fields = await read_body(request, BLOG_BODY)
    now = utc_now()
    row = await database.fetch_one(
        "INSERT INTO blogs (title, content, images, status, author_id, created_at, updated_at) "
        "VALUES (:title, :content, :images, 'pending', :author_id, :now, :now) RETURNING id",
        {"title": fields["title"], "content": fields["content"], "images": json.dumps(fields.get("images", [])),
         "author_id": request.state.user["id"], "now": now})
    blog = await database.fetch_one(BLOG_BY_ID, {"id": row["id"]})
    # A background task runs after the response is sent, so reviewers hear of committed blogs only.
    return JSONResponse(blog_out(blog), 201, background=BackgroundTask(publish, pending_event(blog)))


async def get_blog(request: Request) -> Response:
    """Show one blog: approved ones to everyone, the others to their author and reviewers."""
    user, key = await authenticate(request), f"blog {request.path_params['blog_id']}"
    if cached := public_cache.response(key):
        return cached
    version = public_cache.version
    blog = await get_visible_blog(request.path_params["blog_id"], user)
    response = JSONResponse(blog_out(blog))
    if blog["status"] == "approved":
        public_cache.keep(key, response, version)
    return response


@requires_role(*ROLES)
async def update_blog(request: Request) -> Response:
    """Rewrite your blog while it is not approved; a rejected blog goes back to pending."""
    user = request.state.user
    blog = await get_visible_blog(request.path_params["blog_id"], user)
    if blog["author_id"] != user["id"]:
        raise HTTPException(403, "Only its author may edit a blog.")
    fields = await read_body(request, BLOG_BODY)
    was_rejected = blog["status"] == "rejected"
    # The status condition sits in the UPDATE too: an approval landing meanwhile wins.
    updated = await database.fetch_one(
        "UPDATE blogs SET title = :title, content = :content, images = :images, status = 'pending', "
        "reject_reason = NULL, updated_at = :now WHERE id = :id AND status <> 'approved' RETURNING id",
        {"title": fields["title"], "content": fields["content"], "images": json.dumps(fields.get("images", [])),
         "now": utc_now(), "id": blog["id"]})
    if updated is None:
        raise HTTPException(409, "An approved blog cannot be edited.")
    blog = await database.fetch_one(BLOG_BY_ID, {"id": blog["id"]})
    resubmitted = BackgroundTask(publish, pending_event(blog)) if was_rejected else None
    return JSONResponse(blog_out(blog), background=resubmitted)


@requires_role(*ROLES)
async def delete_blog(request: Request) -> Response:
    """Delete a blog: your own, or any blog if you are an admin."""
    user = request.state.user
    blog = await get_visible_blog(request.path_params["blog_id"], user)
    if blog["author_id"] != user["id"] and user["role"] != "admin":
        raise HTTPException(403, "Only its author or an admin may delete a blog.")
    await database.execute("DELETE FROM blogs WHERE id = :id", {"id": blog["id"]})
    if blog["status"] == "approved":
        public_cache.clear()
    return Response(status_code=204)


async def review_blog(request: Request, status: str, reason: str | None) -> Response:
    """Move a pending blog to `status`; a reviewer may not review their own blog."""
    blog = await get_visible_blog(request.path_params["blog_id"], request.state.user)
    if blog["author_id"] == request.state.user["id"]:
        raise HTTPException(403, "You cannot review your own blog; another reviewer must.")
    # The status condition sits in the UPDATE: of two reviewers racing, only one wins.
    reviewed = await database.fetch_one(
        "UPDATE blogs SET status = :status, reject_reason = :reason, updated_at = :now "
        "WHERE id = :id AND status = 'pending' RETURNING id",
        {"status": status, "reason": reason, "now": utc_now(), "id": blog["id"]})
    if reviewed is None:
        raise HTTPException(409, f"This blog is {blog['status']}; only pending blogs can be reviewed.")
    if status == "approved":
        public_cache.clear()  # after the write: a reader that saw the old list cannot keep it
    return JSONResponse(blog_out(await database.fetch_one(BLOG_BY_ID, {"id": blog["id"]})))


@requires_role("approver", "admin")
async def approve_blog(request: Request) -> Response:
    """Approve a pending blog: it becomes public."""
    return await review_blog(request, "approved", None)


@requires_role("approver", "admin")
async def reject_blog(request: Request) -> Response:
    """Reject a pending blog, optionally with a reason for its author."""
    fields = await read_body(request, REJECT_BODY)
    return await review_blog(request, "rejected", fields.get("reason"))


#### Comments and chat: the history over REST, the live room over a WebSocket


async def list_comments(request: Request) -> Response:
    """List a blog's comments (its chat history), newest first."""
    blog = await get_visible_blog(request.path_params["blog_id"], await authenticate(request))
    limit, before = page_params(request)
    rows = await database.fetch_all(
        "SELECT c.id, c.blog_id, c.author_id, u.username AS author, c.text, c.created_at "
        "FROM comments c JOIN users u ON u.id = c.author_id "
        "WHERE c.blog_id = :blog_id AND (CAST(:before AS INTEGER) IS NULL OR c.id < :before) "
        "ORDER BY c.id DESC LIMIT :limit", {"blog_id": blog["id"], "before": before, "limit": limit + 1})
    return JSONResponse(page_of(rows, limit, dict))


def origin_allowed(websocket: WebSocket) -> bool:
    """Browsers always send Origin; only our CORS origins and our own host may open a socket."""
    origin = websocket.headers.get("origin")
    return origin is None or origin in CORS_ORIGINS or urlsplit(origin).netloc == websocket.headers.get("host")


async def chat(websocket: WebSocket) -> None:
    """Chat under a blog: each message is stored as a comment and sent to everyone in the room.

    Client sends {"text": "Nice post!"}; the room receives {"type": "message", "id": 7,
    "blog_id": 5, "author_id": 2, "author": "alice", "text": "Nice post!", "created_at": "..."}.
    """
    if not origin_allowed(websocket):
        await websocket.close(code=1008)  # before accept: the handshake itself is refused (403)
        return
    try:
        token = websocket.query_params.get("token")
        if not token:
            raise unauthorized("Connect with ?token=<your access token>.")
        user = await user_for_token(token)
        blog = await get_visible_blog(websocket.path_params["blog_id"], user)
    except HTTPException as refusal:
        # Accept, then close: a browser only sees the code and reason after a completed handshake.
        await websocket.accept()
        await websocket.close(code=1008, reason=refusal.detail)
        return
    async with join_room(blog["id"], websocket) as outbox:
        recent = deque(maxlen=CHAT_MESSAGES_PER_10S)  # when this socket's latest messages arrived
        while (message := await websocket.receive())["type"] == "websocket.receive":
            recent.append(time.monotonic())
            if len(recent) == CHAT_MESSAGES_PER_10S and recent[-1] - recent[0] < 10:
                await websocket.close(code=1008, reason="Too many messages; slow down.")
                return
            await post_chat_message(message.get("text"), blog["id"], user, outbox)


async def post_chat_message(text: str | None, blog_id: int, user: dict, outbox: asyncio.Queue) -> None:
    """Store a chat message and send it to the room; an invalid one gets an error, to its sender only."""
    try:
        fields = validate(parse_json(text or ""), CHAT_MESSAGE_BODY)  # a binary frame has no text
    except HTTPException as refusal:
        offer(outbox, {"type": "error", "detail": refusal.detail})
        return
    # INSERT ... SELECT ... WHERE EXISTS: a blog deleted while its room was open stores nothing.
    comment = await database.fetch_one(
        "INSERT INTO comments (blog_id, author_id, text, created_at) SELECT :blog_id, :author_id, :text, :now "
        "WHERE EXISTS (SELECT 1 FROM blogs WHERE id = :blog_id) RETURNING id, blog_id, author_id, text, created_at",
        {"blog_id": blog_id, "author_id": user["id"], "text": fields["text"], "now": utc_now()})
    if comment is None:
        offer(outbox, {"type": "error", "detail": "This blog has been deleted."})
        return
    room_broadcast(blog_id, {"type": "message", **dict(comment), "author": user["username"]})


#### Notifications: Server-Sent Events for reviewers


def sse_frame(event: dict) -> str:
    """One event on the wire, ended by a blank line:

        id: 5
        event: blog_pending
        data: {"type": "blog_pending", "blog_id": 5, "title": "New Blog", "author_id": 2}
    """
    return f"id: {event['blog_id']}\nevent: {event['type']}\ndata: {json.dumps(event)}\n\n"


async def missed_pending_blogs(last_event_id: int) -> list:
    """Pending blogs a reconnecting reviewer has not heard of: newer ones, and ones resubmitted since."""
    return await database.fetch_all(
        "SELECT id, title, author_id FROM blogs WHERE status = 'pending' AND (id > :last_id "
        "OR updated_at > (SELECT updated_at FROM blogs WHERE id = :last_id)) ORDER BY updated_at, id",
        {"last_id": last_event_id})


async def pending_blog_events(last_event_id: int | None) -> AsyncIterator[str]:
    """The stream: first what a reconnecting client missed, then live events, pinging when quiet."""
    with subscribe() as queue:  # before the replay, so that nothing published meanwhile is lost
        yield ": connected\n\n"
        if last_event_id is not None:
            for blog in await missed_pending_blogs(last_event_id):
                yield sse_frame(pending_event(blog))  # one published meanwhile may come twice; never none
        while True:
            try:
                event = await asyncio.wait_for(queue.get(), SSE_PING_SECONDS)
            except TimeoutError:
                yield ": ping\n\n"  # keeps proxies and browsers from closing a quiet connection
                continue
            if event is None:
                return  # it fell behind; EventSource reconnects with Last-Event-ID and misses nothing
            yield sse_frame(event)


@requires_role("approver", "admin", query_token=True)
async def notifications(request: Request) -> Response:
    """Stream an event to reviewers each time a blog starts waiting for review."""
    last_event_id = request.headers.get("last-event-id", "")
    return StreamingResponse(
        pending_blog_events(int(last_event_id) if last_event_id.isdigit() else None),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


#### Feature requests: users suggest, admins triage


@requires_role(*ROLES)
async def list_feature_requests(request: Request) -> Response:
    """List feature requests, newest first; ?status= keeps one status."""
    limit, before = page_params(request)
    status = request.query_params.get("status")
    if status is not None:
        check_value("status", status, TRIAGE_BODY["properties"]["status"])
    rows = await database.fetch_all(
        "SELECT " + FEATURE_REQUEST_COLUMNS + " FROM feature_requests "
        "WHERE (CAST(:status AS TEXT) IS NULL OR status = :status) "
        "AND (CAST(:before AS INTEGER) IS NULL OR id < :before) ORDER BY id DESC LIMIT :limit",
        {"status": status, "before": before, "limit": limit + 1})
    return JSONResponse(page_of(rows, limit, dict))


@requires_role(*ROLES)
async def create_feature_request(request: Request) -> Response:
    """Suggest a feature; it starts as pending, with priority 3 unless you say otherwise."""
    fields = await read_body(request, FEATURE_REQUEST_BODY)
    now = utc_now()
    row = await database.fetch_one(
        "INSERT INTO feature_requests (title, description, status, priority, author_id, created_at, updated_at) "
        "VALUES (:title, :description, 'pending', :priority, :author_id, :now, :now) "
        "RETURNING " + FEATURE_REQUEST_COLUMNS,
        {"title": fields["title"], "description": fields["description"], "priority": fields.get("priority", 3),
         "author_id": request.state.user["id"], "now": now})
    return JSONResponse(dict(row), 201)


@requires_role("admin")
async def triage_feature_request(request: Request) -> Response:
    """Accept or decline a feature request, and optionally change its priority."""
    fields = await read_body(request, TRIAGE_BODY)
    row = await database.fetch_one(
        "UPDATE feature_requests SET status = :status, priority = COALESCE(:priority, priority), "
        "updated_at = :now WHERE id = :id RETURNING " + FEATURE_REQUEST_COLUMNS,
        {"status": fields["status"], "priority": fields.get("priority"), "now": utc_now(),
         "id": request.path_params["request_id"]})
    if row is None:
        raise HTTPException(404, f"There is no feature request {request.path_params['request_id']}.")
    return JSONResponse(dict(row))


#### Drafts: one saved draft per user


def draft_out(row) -> dict:
    """A draft as clients see it."""
    return {"title": row["title"], "content": row["content"], "images": json.loads(row["images"]),
            "updated_at": row["updated_at"]}


@requires_role(*ROLES)
async def get_draft(request: Request) -> Response:
    """Show your saved draft."""
    row = await database.fetch_one("SELECT title, content, images, updated_at FROM drafts WHERE user_id = :user_id",
                                   {"user_id": request.state.user["id"]})
    if row is None:
        raise HTTPException(404, "You have no saved draft.")
    return JSONResponse(draft_out(row))


@requires_role(*ROLES)
async def save_draft(request: Request) -> Response:
    """Save your draft whole, replacing the one saved before; missing fields are saved empty."""
    fields = await read_body(request, DRAFT_BODY)
    row = await database.fetch_one(
        "INSERT INTO drafts (user_id, title, content, images, updated_at) "
        "VALUES (:user_id, :title, :content, :images, :now) "
        "ON CONFLICT (user_id) DO UPDATE SET title = excluded.title, content = excluded.content, "
        "images = excluded.images, updated_at = excluded.updated_at "
        "RETURNING title, content, images, updated_at",
        {"user_id": request.state.user["id"], "title": fields.get("title", ""),
         "content": fields.get("content", ""), "images": json.dumps(fields.get("images", [])), "now": utc_now()})
    return JSONResponse(draft_out(row))


@requires_role(*ROLES)
async def delete_draft(request: Request) -> Response:
    """Throw away your saved draft."""
    await database.execute("DELETE FROM drafts WHERE user_id = :user_id", {"user_id": request.state.user["id"]})
    return Response(status_code=204)


#### Health


async def health(request: Request) -> Response:
    """Say whether the app can reach its database."""
    try:
        await database.fetch_val("SELECT 1")
    except Exception:
        log.exception("Health check: the database did not answer")
        return JSONResponse({"detail": "The database is not answering."}, 503)
    return JSONResponse({"status": "ok"})


#### API documentation: an OpenAPI 3.1 document built from the same declarations, and Swagger UI
#
# Request bodies and query parameters are documented with the very declarations the handlers
# validate with, and who may call what comes from the requires_role decorator, so the document
# cannot drift from what the server enforces.

ID, TEXT = {"type": "integer"}, {"type": "string"}
TIMESTAMP = {"type": "string", "format": "date-time", "examples": ["2026-11-21T20:17:24.123Z"]}


def shape(**properties) -> dict:
    """A JSON object schema with every property required."""
    return {"type": "object", "required": list(properties), "properties": properties}


def page_shape(item: str) -> dict:
    """A page of items: {"items": [...], "next_cursor": "42" or null}."""
    return shape(items={"type": "array", "items": {"$ref": f"#/components/schemas/{item}"}},
                 next_cursor={"type": ["string", "null"]})


BLOG_SHAPE = shape(id=ID, title=TEXT, content=TEXT, images=URL_LIST,
                   status={"enum": ["pending", "approved", "rejected"]}, author_id=ID, author=TEXT,
                   created_at=TIMESTAMP, updated_at=TIMESTAMP)
BLOG_SHAPE["properties"]["reject_reason"] = {"type": ["string", "null"], "description": "only on rejected blogs"}
SHAPES = {
    "User": shape(id=ID, username=TEXT, email=TEXT, role={"enum": list(ROLES)}, created_at=TIMESTAMP),
    "Tokens": shape(access_token=TEXT, refresh_token=TEXT, token_type={"const": "bearer"}, expires_in=ID),
    "Blog": BLOG_SHAPE,
    "BlogPage": page_shape("Blog"),
    "Comment": shape(id=ID, blog_id=ID, author_id=ID, author=TEXT, text=TEXT, created_at=TIMESTAMP),
    "CommentPage": page_shape("Comment"),
    "FeatureRequest": shape(id=ID, title=TEXT, description=TEXT, status=TRIAGE_BODY["properties"]["status"],
                            priority=FEATURE_REQUEST_BODY["properties"]["priority"], author_id=ID,
                            created_at=TIMESTAMP, updated_at=TIMESTAMP),
    "FeatureRequestPage": page_shape("FeatureRequest"),
    "Draft": shape(title=TEXT, content=TEXT, images=URL_LIST, updated_at=TIMESTAMP),
    "Health": shape(status={"const": "ok"}),
    "Error": shape(detail=TEXT),
}

EVENT_STREAM = {"description": "A text/event-stream that stays open. Each blog that starts waiting for review "
                "is one event: `id: 5`, `event: blog_pending`, `data: {\"type\": \"blog_pending\", \"blog_id\": 5, "
                "\"title\": \"New Blog\", \"author_id\": 2}`. A `: ping` comment comes every 15 s; send "
                "Last-Event-ID to replay the pending blogs you missed.",
                "content": {"text/event-stream": {"schema": {"type": "string"}}}}
CHAT = ("The live chat under a blog is a WebSocket at /api/blogs/{blog_id}/ws?token=ACCESS_TOKEN: send "
        "{\"text\": \"...\"} (1-2,000 characters); everyone in the room receives {\"type\": \"message\", ...comment}, "
        "and it is stored as one of these comments. Closes with 1008 for a bad token or a blog you may not see.")


def query(name: str, rule: dict) -> dict:
    """A documented query parameter."""
    return {"name": name, "in": "query", "required": False, "schema": rule}


PAGE_QUERY = [query("limit", LIMIT), query("cursor", CURSOR)]

# Per handler: its request body, what success returns, and the refusals particular to it.
# Refusals every operation of a kind shares (a bad body, a missing token, a wrong role, an
# unknown id) are added by openapi_operation.
OPERATIONS = {
    health: {"ok": (200, "Health"), "errors": [503]},
    register: {"body": REGISTER_BODY, "ok": (201, "User"), "errors": [409]},
    login: {"body": LOGIN_BODY, "form": True, "ok": (200, "Tokens"), "errors": [401, 429]},
    refresh: {"body": REFRESH_BODY, "ok": (200, "Tokens"), "errors": [401]},
    logout: {"body": REFRESH_BODY, "ok": (204, None)},
    me: {"ok": (200, "User")},
    make_admin: {"ok": (200, "User"), "errors": [409]},
    change_role: {"body": ROLE_BODY, "ok": (200, "User"), "errors": [409]},
    list_blogs: {"query": PAGE_QUERY + [query("q", {"type": "string", "description": "words in title or content"}),
                                        query("author", {"type": "string", "description": "a username"})],
                 "ok": (200, "BlogPage")},
    create_blog: {"body": BLOG_BODY, "ok": (201, "Blog")},
    list_pending_blogs: {"query": PAGE_QUERY, "ok": (200, "BlogPage")},
    get_blog: {"optional_token": True, "ok": (200, "Blog")},
    update_blog: {"body": BLOG_BODY, "ok": (200, "Blog"), "errors": [409]},
    delete_blog: {"ok": (204, None)},
    approve_blog: {"ok": (200, "Blog"), "errors": [409]},
    reject_blog: {"body": REJECT_BODY, "ok": (200, "Blog"), "errors": [409]},
    list_comments: {"optional_token": True, "query": PAGE_QUERY, "ok": (200, "CommentPage"), "description": CHAT},
    notifications: {"query": [query("token", {"type": "string", "description": "the access token, for EventSource"})],
                    "ok": (200, EVENT_STREAM)},
    list_feature_requests: {"query": PAGE_QUERY + [query("status", TRIAGE_BODY["properties"]["status"])],
                            "ok": (200, "FeatureRequestPage")},
    create_feature_request: {"body": FEATURE_REQUEST_BODY, "ok": (201, "FeatureRequest")},
    triage_feature_request: {"body": TRIAGE_BODY, "ok": (200, "FeatureRequest")},
    get_draft: {"ok": (200, "Draft"), "errors": [404]},
    save_draft: {"body": DRAFT_BODY, "ok": (200, "Draft")},
    delete_draft: {"ok": (204, None)},
}


def response(returns) -> dict:
    """A documented response: a named shape, nothing (None), or a response object as it is."""
    if returns is None:
        return {"description": "Done; no content."}
    if isinstance(returns, dict):
        return returns
    return {"description": "OK", "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{returns}"}}}}


def path_parameter(name: str, convertor: Convertor) -> dict:
    """A documented path parameter: {blog_id:id} is an integer, {username} a string."""
    if isinstance(convertor, IdConvertor):
        return {"name": name, "in": "path", "required": True, "schema": {"type": "integer", "maximum": 999_999_999}}
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


def openapi_operation(route: Route) -> dict:
    """Document one route: summary, who may call it, parameters, body, and every answer it can give."""
    handler, spec = route.endpoint, OPERATIONS[route.endpoint]
    roles, errors = getattr(handler, "roles", None), set(spec.get("errors", []))
    parameters = [path_parameter(name, convertor) for name, convertor in route.param_convertors.items()]
    parameters += spec.get("query", [])
    operation = {"operationId": handler.__name__, "summary": handler.__doc__.strip().splitlines()[0],
                 "parameters": parameters, "responses": {str(spec["ok"][0]): response(spec["ok"][1])}}
    if "description" in spec:
        operation["description"] = spec["description"]
    if "body" in spec:
        content = {"application/json": {"schema": spec["body"]}}
        if spec.get("form"):  # the OAuth2 password flow posts a form
            content["application/x-www-form-urlencoded"] = {"schema": spec["body"]}
        operation["requestBody"] = {"required": "required" in spec["body"], "content": content}
        errors |= {400, 413, 422}
    if roles:
        operation["security"] = [{"bearer": []}, {"password": []}]
        operation["description"] = f"Roles: {', '.join(roles)}. " + operation.get("description", "")
        errors |= {401} | ({403} if set(roles) != set(ROLES) else set())
    if spec.get("optional_token"):
        operation["security"] = [{}, {"bearer": []}, {"password": []}]
        errors.add(401)
    if route.param_convertors:
        errors.add(404)
    if spec.get("query"):
        errors.add(422)
    for status in sorted(errors):
        operation["responses"][str(status)] = {"description": HTTPStatus(status).phrase, "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return operation


def openapi_document() -> dict:
    """The OpenAPI 3.1 document of every HTTP route in `routes`."""
    paths = {}
    for route in routes:
        if isinstance(route, Route) and route.include_in_schema:
            path = re.sub(r":\w+}", "}", route.path)  # "/api/blogs/{blog_id:id}" -> "/api/blogs/{blog_id}"
            for method in sorted(route.methods - {"HEAD"}):
                paths.setdefault(path, {})[method.lower()] = openapi_operation(route)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Blog platform API", "version": "1.0.0", "description": CHAT},
        "paths": paths,
        "components": {"schemas": SHAPES, "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            "password": {"type": "oauth2", "flows": {"password": {"tokenUrl": "/api/auth/login", "scopes": {}}}},
        }},
    }


async def openapi_json(request: Request) -> Response:
    """Serve the OpenAPI document."""
    return JSONResponse(openapi_document())


# Swagger UI's files come from a Python package, not a CDN: the docs then work offline, in a
# demo room without network and in a test's headless browser alike.
SWAGGER_UI_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Blog platform API</title>
<link rel="stylesheet" href="/docs/assets/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", persistAuthorization: true});</script>
</body>
</html>"""


async def swagger_ui(request: Request) -> Response:
    """Show Swagger UI over the OpenAPI document."""
    return HTMLResponse(SWAGGER_UI_PAGE)


#### The app: routes, error handlers, lifespan

routes = [
    Route("/health", health),
    Route("/openapi.json", openapi_json, include_in_schema=False),
    Route("/docs", swagger_ui, include_in_schema=False),
    Mount("/docs/assets", StaticFiles(directory=swagger_ui_files.static_path), name="swagger_ui_assets"),
    Route("/api/auth/register", register, methods=["POST"]),
    Route("/api/auth/login", login, methods=["POST"]),
    Route("/api/auth/refresh", refresh, methods=["POST"]),
    Route("/api/auth/logout", logout, methods=["POST"]),
    Route("/api/auth/me", me),
    Route("/api/auth/make-admin/{username}", make_admin, methods=["POST"]),
    Route("/api/users/{username}/role", change_role, methods=["PATCH"]),
    Route("/api/blogs/", list_blogs),
    Route("/api/blogs/", create_blog, methods=["POST"]),
    Route("/api/blogs/pending", list_pending_blogs),
    Route("/api/blogs/{blog_id:id}", get_blog),
    Route("/api/blogs/{blog_id:id}", update_blog, methods=["PUT"]),
    Route("/api/blogs/{blog_id:id}", delete_blog, methods=["DELETE"]),
    Route("/api/blogs/{blog_id:id}/approve", approve_blog, methods=["POST"]),
    Route("/api/blogs/{blog_id:id}/reject", reject_blog, methods=["POST"]),
    Route("/api/blogs/{blog_id:id}/comments", list_comments),
    WebSocketRoute("/api/blogs/{blog_id:id}/ws", chat),
    Route("/api/notifications/sse", notifications),
    Route("/api/feature-requests/", list_feature_requests),
    Route("/api/feature-requests/", create_feature_request, methods=["POST"]),
    Route("/api/feature-requests/{request_id:id}", triage_feature_request, methods=["PATCH"]),
    Route("/api/session/draft", get_draft),
    Route("/api/session/draft", save_draft, methods=["POST"]),
    Route("/api/session/draft", delete_draft, methods=["DELETE"]),
]


async def http_error(request: Request, error: HTTPException) -> Response:
    """Every refusal, ours or Starlette's (404, 405), as {"detail": "..."}."""
    headers = dict(error.headers or {})
    if error.status_code == 405:
        headers["Allow"] = allowed_methods(request.scope)
    return JSONResponse({"detail": error.detail}, error.status_code, headers=headers)


def allowed_methods(scope) -> str:
    """Every method the routes take at this path; Starlette's own 405 names only one route's."""
    methods = set()
    for route in routes:
        if isinstance(route, Route) and route.matches(scope)[0] != Match.NONE:
            methods |= route.methods
    return ", ".join(sorted(methods))


async def server_error(request: Request, error: Exception) -> Response:
    """An unexpected failure: logged by Starlette with its traceback; the client learns nothing internal."""
    return JSONResponse({"detail": "Something went wrong on our side; please try again."}, 500)


class RedactTokens(logging.Filter):
    """Hide ?token= values in uvicorn's log lines: a token in a log file is a stolen login."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(re.sub(r"(token=)[^&\s\"]+", r"\1[redacted]", arg) if isinstance(arg, str) else arg
                                for arg in record.args)
        return True


redact_tokens = RedactTokens()


@asynccontextmanager
async def lifespan(app: Starlette):
    """Connect to the database and create the tables at start-up; disconnect at shutdown."""
    for logger in ("uvicorn.access", "uvicorn.error"):  # the access log, and the WebSocket lines
        logging.getLogger(logger).addFilter(redact_tokens)
    if SECRET_KEY_IS_RANDOM:
        log.warning("SECRET_KEY is not set: using a random key, so tokens will not outlive a restart.")
    await database.connect()
    await create_tables()
    try:
        yield
    finally:
        await database.disconnect()


app = Starlette(
    routes=routes,
    middleware=[Middleware(CORSMiddleware, allow_origins=CORS_ORIGINS, allow_methods=["*"],
                           allow_headers=["Authorization", "Content-Type", "Last-Event-ID"])],
    exception_handlers={HTTPException: http_error, Exception: server_error},
    lifespan=lifespan,
)


#### Command line: create-admin, --demo, and serving


def read_new_password() -> str:
    """Ask for a password twice (on a terminal), or read two lines from standard input."""
    if sys.stdin.isatty():
        first, second = getpass.getpass("Password: "), getpass.getpass("Password again: ")
    else:
        first, second = sys.stdin.readline().rstrip("\n"), sys.stdin.readline().rstrip("\n")
    if first != second:
        sys.exit("The two passwords differ.")
    return first


async def add_user_from_command_line(username: str, email: str, password: str, role: str) -> bool:
    """Store a user checked like a registration; False if the name or email is taken."""
    fields = validate({"username": username, "email": email, "password": password}, REGISTER_BODY)
    return await add_user(fields, role) is not None


async def create_admin(username: str, email: str, password: str) -> None:
    """The first admin, from the command line: nobody can make themselves one over HTTP."""
    async with database:
        await create_tables()
        try:
            created = await add_user_from_command_line(username, email, password, "admin")
        except HTTPException as error:
            sys.exit(error.detail)
    if not created:
        sys.exit(f"The username {username!r} or the email {email!r} is already taken.")
    print(f"Admin {username} created.")


DEMO_ACCOUNTS = [("demo-admin", "admin"), ("demo-approver", "approver"), ("demo-user", "user")]
DEMO_BLOGS = [("Welcome to the blog", "approved", None), ("Waiting for review", "pending", None),
              ("A rough first try", "rejected", "Please add an introduction.")]


async def seed_demo() -> None:
    """One account per role and a blog in each status, so a walkthrough starts at once."""
    async with database:
        await create_tables()
        for username, role in DEMO_ACCOUNTS:
            await add_user_from_command_line(username, f"{username}@example.com", f"{username}-password", role)
        author = await database.fetch_one(USER_BY_NAME, {"username": "demo-user"})
        for title, status, reason in DEMO_BLOGS:
            await database.execute(
                "INSERT INTO blogs (title, content, images, status, reject_reason, author_id, created_at, updated_at) "
                "SELECT :title, :content, '[]', :status, :reason, :author_id, :now, :now "
                "WHERE NOT EXISTS (SELECT 1 FROM blogs WHERE title = :title)",
                {"title": title, "content": f"# {title}\n\nWritten by the demo seed.", "status": status,
                 "reason": reason, "author_id": author["id"], "now": utc_now()})
    print("Demo accounts (their passwords are public: never run --demo on a public server):")
    for username, role in DEMO_ACCOUNTS:
        print(f"  {role:9} username {username:14} password {username}-password")


def main(argv: list[str]) -> None:
    """Parse the command line; with no command, serve the API."""
    parser = argparse.ArgumentParser(description="The blog platform API.")
    parser.add_argument("--demo", action="store_true", help="seed demo accounts and posts, then serve")
    commands = parser.add_subparsers(dest="command")
    admin = commands.add_parser("create-admin", help="create an admin account (asks for the password)")
    admin.add_argument("username")
    admin.add_argument("email")
    args = parser.parse_args(argv)
    if args.command == "create-admin":
        return asyncio.run(create_admin(args.username, args.email, read_new_password()))
    if args.demo:
        asyncio.run(seed_demo())
    uvicorn.run(app, host=HOST, port=PORT, proxy_headers=True, forwarded_allow_ips=FORWARDED_ALLOW_IPS,
                ws_max_size=CHAT_MAX_FRAME_BYTES, timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS)


if __name__ == "__main__":
    main(sys.argv[1:])
