"""A blog platform API in one Starlette file.

Accounts with JWT access and refresh tokens, three roles (user, approver, admin), blog posts
that wait for an approver before the world sees them, live notifications and chat, feature
requests and saved drafts, on SQLite or, for several processes, PostgreSQL. Every route is in
API.md and at /docs; the tables are in schema.sql; the README says how to run and deploy it, and
`python blog.py --help` lists the commands (serve, --demo, create-admin, migrate, backup, restore).

How to read this file. Each section starts with a banner (a line beginning "####"); read them top to
bottom. The lesson ends at the first "#### Appendix" banner, and the three flows below need no appendix.
Its first sections (configuration, the database, security, requests, auth, pages, versions, live events,
the record) give what the sections per resource (users, blogs, likes, chat, notifications) use, chiefly:
- the database: `database.fetch_all`, `fetch_one`, `fetch_val`, `execute`, `async with database.transaction():`;
- the role decorator: `@requires_role("approver", "admin")`, `@login_required`, `@verified_required` on writes;
- live events: `async with publishing(): ... await publish("blog_pending", ...)` beside a change, heard
  in order by the functions a section registered with `@on_event("blog_pending")`;
- the record: `await record("blog_rejected", user, blog_id=5, detail={...})` in the same block, so
  that every decision leaves one entry, committed with it.

The three flows, as the functions they pass through, in file order (test_blog.py checks it):
A role check: read_token -> user_for_claims -> authenticate -> requires_role -> approve_blog
A post reviewed and heard live: requires_role -> read_body -> validate -> on_event -> publishing
   -> publish -> run_event_bus -> deliver_events_after -> deliver -> record -> create_blog
   -> review_blog -> approve_blog -> send_to_event_streams -> hears -> subscribe -> sse_frame
   -> event_stream -> EventStreamResponse -> notifications
A chat message reaching its room: read_ticket -> authenticate -> check_verified -> parse_json
   -> validate -> publishing -> publish -> run_event_bus -> deliver_events_after -> deliver
   -> offer -> count_connection -> get_visible_blog -> chat -> post_chat_message
   -> store_chat_message -> join_room -> send_outbox -> room_broadcast -> send_chat_message

The appendices, the secondary flows and the machinery behind those interfaces, a first reading may skip:
A. Accounts by mail: password reset, verified addresses, address change (`await queue_mail(*reset_mail(user))`).
B. For admins: roles and deleting accounts, the accounts list, and the audit of decisions.
C. More resources: feature requests, drafts, and the writing assistant's jobs, each ended once.
D. The database drivers: SQLite's writer and readers; PostgreSQL's pool, row locks and event listener.
E. The public cache: why the front page and public blogs are served from memory for a second.
F. The page at / (page.html), health, and /openapi.json and /docs, built from the handlers' declarations.
G. Log redaction: no token or ticket reaches a log line.
H. Schema versions, upgrades and backups: `migrate`, `backup` and `restore`.
I. The mail sender: how a queued mail leaves the outbox over SMTP, and is retried.
J. Explain mode (--demo): how each request's path through this file is traced, line by line.
Last come the app (`routes`, one line per endpoint; errors; `lifespan`) and the command line: last, as
the routes name every handler, the appendices' too.
"""

import argparse
import asyncio
import base64
import collections
import fcntl
import functools
import getpass
import hashlib
import inspect
import ipaddress
import itertools
import json
import logging
import math
import os
import re
import secrets
import shutil
import signal
import smtplib
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, closing, contextmanager, nullcontext, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from functools import wraps
from http import HTTPStatus
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, unquote_plus, urlsplit

import asyncpg
import bcrypt
import databases
import jwt
import httpx
import uvicorn
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from openapi_ui_bundles import swagger_ui as swagger_ui_files
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.config import Config
from starlette.convertors import IntegerConvertor, register_url_convertor
from starlette.datastructures import CommaSeparatedStrings
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, HTTPConnection, Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Match, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect


#### Configuration: read once from the environment (or a .env file), nowhere else
#
# One exception: `python blog.py --demo` sets DEMO, here and, through the environment, in its workers.

# Starlette's Config warns when the file is missing, and a .env is optional here.
config = Config(".env" if os.path.isfile(".env") else None)

DATABASE_URL = config("DATABASE_URL", default="sqlite:///blog.db")
SECRET_KEY = config("SECRET_KEY", default="")
ACCESS_TOKEN_MINUTES = config("ACCESS_TOKEN_MINUTES", cast=int, default=30)
REFRESH_TOKEN_DAYS = config("REFRESH_TOKEN_DAYS", cast=int, default=7)
CORS_ORIGINS = list(config("CORS_ORIGINS", cast=CommaSeparatedStrings, default=""))
SSE_PING_SECONDS = config("SSE_PING_SECONDS", cast=float, default=15)
WEBSOCKET_PING_SECONDS = config("WEBSOCKET_PING_SECONDS", cast=float, default=20)  # a socket silent this long twice is dropped
CHAT_MESSAGES_PER_10S = config("CHAT_MESSAGES_PER_10S", cast=int, default=20)  # one user's flood limit
LIVE_CONNECTIONS_PER_USER = config("LIVE_CONNECTIONS_PER_USER", cast=int, default=5)  # streams and sockets at once
BCRYPT_ROUNDS = config("BCRYPT_ROUNDS", cast=int, default=12)  # tests lower it; 12 costs ~0.25 s
# The writing assistant: an OpenAI-compatible chat-completions URL (OpenAI's, Ollama's http://127.0.0.1:11434/v1).
WRITER_URL = config("WRITER_URL", default="")  # unset: no writer, and generating a draft is a 503
WRITER_MODEL = config("WRITER_MODEL", default="gpt-4o-mini")
WRITER_API_KEY = config("WRITER_API_KEY", default="")
WRITER_TIMEOUT_SECONDS = config("WRITER_TIMEOUT_SECONDS", cast=float, default=60)
JOB_HEARTBEAT_SECONDS = config("JOB_HEARTBEAT_SECONDS", cast=float, default=5)  # 3 missed: the job is abandoned
STATEMENT_TIMEOUT_SECONDS = config("STATEMENT_TIMEOUT_SECONDS", cast=float, default=5)  # PostgreSQL: then a 503
JOBS_AT_ONCE = config("JOBS_AT_ONCE", cast=int, default=2)  # writing jobs each process runs at the same time
JOBS_WAITING_AT_MOST = config("JOBS_WAITING_AT_MOST", cast=int, default=50)  # pending jobs in all; past this, a 503
JOB_WAIT_SECONDS = config("JOB_WAIT_SECONDS", cast=float, default=300)  # a job not started by then fails: "too busy"
HOST = config("HOST", default="127.0.0.1")
PORT = config("PORT", cast=int, default=8000)
DEMO = config("DEMO", cast=bool, default=False)  # set by --demo: the page at / offers its accounts
EXPLAIN = config("EXPLAIN", cast=bool, default=False)  # on with --demo too: every request traced (Appendix J)
# Whose X-Forwarded-For to believe: only the proxy in front (Caddy, on this machine). Anyone
# else could claim any address and slip past the per-address login throttle.
FORWARDED_ALLOW_IPS = config("FORWARDED_ALLOW_IPS", default="127.0.0.1")
# Mail: smtp://[user:password@]host[:port] (587 unless given; STARTTLS whenever offered, and never a
# password without it) or smtps://...:465 (TLS from the first byte), user and password percent-encoded.
# Unset: every mail is logged, whole, so that a laptop can follow a password reset without a mail server.
SMTP_URL = config("SMTP_URL", default="")
MAIL_FROM = config("MAIL_FROM", default="blog@localhost")
PUBLIC_URL = config("PUBLIC_URL", default=f"http://127.0.0.1:{PORT}").rstrip("/")  # what links in mails start with
REQUIRE_VERIFIED_EMAIL = config("REQUIRE_VERIFIED_EMAIL", cast=bool, default=False)  # on: unverified accounts only read
RESET_TOKEN_MINUTES = config("RESET_TOKEN_MINUTES", cast=int, default=30)
VERIFY_TOKEN_HOURS = config("VERIFY_TOKEN_HOURS", cast=int, default=48)
MAIL_RETRY_SECONDS = config("MAIL_RETRY_SECONDS", cast=float, default=10)  # the first pause after a failed try; doubles
MAIL_RETRY_MINUTES = config("MAIL_RETRY_MINUTES", cast=float, default=60)  # then the mail is given up, with a log line

SECRET_KEY_IS_RANDOM = not SECRET_KEY
SECRET_KEY = SECRET_KEY or secrets.token_urlsafe(32)
# HS256 wants a key of at least 256 bits (RFC 7518, section 3.2): a shorter one is refused at start.
SECRET_KEY_TOO_SHORT = len(SECRET_KEY.encode()) < 32
SCHEMA_PATH = Path(__file__).with_name("schema.sql")
UPGRADES_DIR = Path(__file__).with_name("upgrades")  # upgrades/N-name.sql brings a database to version N
MAX_BODY_BYTES = 1024 * 1024
LOGIN_WINDOW_SECONDS = 15 * 60
LOGIN_FAILURES_PER_ACCOUNT = 5  # within the window; then 429 until the oldest failure ages out
LOGIN_FAILURES_PER_ADDRESS = 20
REGISTRATIONS_PER_ADDRESS = config("REGISTRATIONS_PER_ADDRESS", cast=int, default=10)  # within the window
LINK_ASKS_PER_HOUR = 3  # forgot-password or request-verify-token asks for one address from one client
# Mails one address gets an hour, per kind, whatever route caused them; past it, no mail, and nobody
# is told. A kind each, so that a flood of notices never stops a reset link.
MAILS_PER_HOUR = {"reset": 10, "verify": 5, "undo": 5, "notice": 5}
ADDRESS_CHANGES_PER_DAY = 3  # requests for a new address, per account
SECURE_LINK_DAYS = 7  # how long the "this wasn't me" link of an address change works
SEARCH_MAX_CHARACTERS = 200
ROLES = ("user", "approver", "admin")
LISTENER_QUEUE_SIZE = 100  # events or chat messages waiting for one slow listener before it is cut off
CHAT_MAX_FRAME_BYTES = 64 * 1024  # a bigger WebSocket frame closes the socket with 1009
EVENT_RETENTION_HOURS = 24  # how far back an event stream can replay what a client missed
EVENT_POLL_SECONDS = 5  # each process reads the log this often even when no notification comes

log = logging.getLogger("uvicorn.error")  # uvicorn's logger, so our lines show up in its output


def utc_time(moment: datetime) -> str:
    """A time as stored and sent: "2026-11-21T20:17:24.123Z" (it sorts in time order)."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_now() -> str:
    """The current time as stored and sent."""
    return utc_time(datetime.now(UTC))


#### The database, as the handlers use it
#
# `database` (made in Appendix D, for DATABASE_URL) is a `databases.Database` whose query methods take
# :name parameters: `await database.fetch_all(query, values)` (a list of plain dicts), `fetch_one` (a
# dict or None), `fetch_val` (the first column of the first row, or None) and `execute` (None: a statement
# that must say what it changed ends in RETURNING, read with fetch_one). `async with database.transaction():`
# commits its statements together; transactions do not nest: a second one inside raises RuntimeError, on
# either database. On PostgreSQL transactions run at once, so one that reads a row to decide how to change
# it locks it first: `database.LOCKING` is " FOR UPDATE" there, "" on SQLite, where a transaction holds the
# whole database. Other differences (SEARCH, BY_AUTHOR, EACH_AUTHOR, listening) are explained in Appendix D.


class RowDeletedMeanwhile(Exception):
    """A write's row (an account, a blog) was deleted meanwhile; its foreign key refused it: a 404."""


class DatabaseUnavailable(Exception):
    """The database cannot be reached or write just now (restarting, network down, disk full): a 503, Retry-After.
    Rolled back, unless the connection dropped after PostgreSQL got the COMMIT: then the change may stand."""


#### Security: passwords, tokens and sessions, stream tickets, guess counting, the role decorator


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


# bcrypt runs in threads of its own: more hashes at once than spare cores, or at the event loop's
# priority, would take the CPU from the loop, so from every other request. Logins wait their turn here.
def lower_thread_priority() -> None:
    """Make the calling thread give way to the event loop (Linux sets niceness per thread)."""
    if sys.platform == "linux":
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)


BCRYPT_THREADS = ThreadPoolExecutor(max(1, (os.cpu_count() or 2) - 1), "bcrypt", lower_thread_priority)


async def in_bcrypt_thread(function, *args):
    """Run a bcrypt function in one of the BCRYPT_THREADS."""
    return await asyncio.get_running_loop().run_in_executor(BCRYPT_THREADS, function, *args)


# What login checks a password against when nobody has the name (see login).
DUMMY_PASSWORD_HASH = hash_password(secrets.token_urlsafe(16))


def unauthorized(detail: str) -> HTTPException:
    """A 401 with the header that tells clients to send a bearer token."""
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


# Token claims, e.g. an access token:
#   {"sub": "42", "type": "access", "sid": "q3J...", "iat": 1763756244, "exp": 1763758044}
# "sid" names the session (the login) it belongs to; a refresh token adds "jti", so that no two
# are alike. "type" keeps the two apart: a refresh token is no access token, and the other way round.
JWT_ALGORITHM = "HS256"
USER_ID_CLAIM = re.compile(r"[0-9]{1,9}")  # no id has more than 9 digits (see NO_CURSOR)
SESSION_ID_CLAIM = re.compile(r"[A-Za-z0-9_-]{22}")  # secrets.token_urlsafe(16), as start_session makes them


def claims_in_shape(claims) -> bool:
    """Whether claims have our shape. Only SECRET_KEY's holder signs odd ones, but a "sub" of "abc" or
    30 digits, or a "sid" that is a list, would reach the database: a 500, where a bad credential is a 401."""
    return (isinstance(claims, dict) and isinstance(claims.get("sub"), str) and isinstance(claims.get("sid"), str)
            and USER_ID_CLAIM.fullmatch(claims["sub"]) is not None
            and SESSION_ID_CLAIM.fullmatch(claims["sid"]) is not None
            and type(claims.get("exp")) in (int, float) and math.isfinite(claims["exp"]))


def make_token(user_id: int, kind: str, lifetime: timedelta, **claims) -> str:
    """Sign a token of `kind` ("access" or "refresh") for a user."""
    now = datetime.now(UTC)
    claims |= {"sub": str(user_id), "type": kind, "iat": now, "exp": now + lifetime}
    return jwt.encode(claims, SECRET_KEY, algorithm=JWT_ALGORITHM)


def read_token(token: str, kind: str) -> dict:
    """Verify a token and return its claims; any fault is a 401."""
    try:
        claims = jwt.decode(token, SECRET_KEY, algorithms=[JWT_ALGORITHM],  # pinned: no "alg": "none"
                            options={"require": ["exp", "iat", "sub", "type", "sid"]})
    except jwt.ExpiredSignatureError:
        raise unauthorized("Your token has expired; refresh it or log in again.")
    except jwt.InvalidTokenError:
        raise unauthorized("Your token is not valid; log in again.")
    if not claims_in_shape(claims) or claims["type"] not in ("access", "refresh"):
        raise unauthorized("Your token is not valid; log in again.")
    if claims["type"] != kind:
        raise unauthorized(f"This is not an {kind} token.")
    return claims


def token_hash(token: str) -> str:
    """What the database keeps of a refresh token: its SHA-256, never the token."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_refresh_token(user_id: int, session_id: str) -> tuple[str, str]:
    """A refresh token for a session, and when it expires (as stored)."""
    lifetime = timedelta(days=REFRESH_TOKEN_DAYS)
    token = make_token(user_id, "refresh", lifetime, sid=session_id, jti=secrets.token_urlsafe(16))
    return token, utc_time(datetime.now(UTC) + lifetime)


def tokens_out(user_id: int, session_id: str, refresh_token: str) -> dict:
    """The tokens a login or a refresh answers with: a new access token beside the refresh token."""
    access_token = make_token(user_id, "access", timedelta(minutes=ACCESS_TOKEN_MINUTES), sid=session_id)
    return {"access_token": access_token, "refresh_token": refresh_token, "token_type": "bearer",
            "expires_in": ACCESS_TOKEN_MINUTES * 60}


async def start_session(user_id: int) -> dict:
    """Log a user in: a new session, remembered by its refresh token's hash."""
    session_id = secrets.token_urlsafe(16)
    refresh_token, expires_at = new_refresh_token(user_id, session_id)
    await database.execute(
        "INSERT INTO sessions (id, user_id, refresh_hash, expires_at) VALUES (:id, :user_id, :refresh_hash, :expires_at)",
        {"id": session_id, "user_id": user_id, "refresh_hash": token_hash(refresh_token), "expires_at": expires_at})
    return tokens_out(user_id, session_id, refresh_token)


USER_IN_SESSION = """
    SELECT u.id, u.username, u.email, u.role, u.created_at, u.email_verified, u.security_stamp, s.id AS session_open,
           (SELECT COALESCE(MAX(id), 0) FROM events) AS as_of_event
    FROM users u LEFT JOIN sessions s ON s.id = :session_id AND s.user_id = u.id AND s.ended_at IS NULL
    WHERE u.id = :id"""


async def user_for_claims(claims: dict) -> dict:
    """The user that verified claims name, read fresh so a role change applies at once; 401 once the account
    or session is gone (logout, reused refresh token, password change). With "credential_expires" (a stream
    ends then) and "as_of_event": the newest event id, read in the same snapshot, so every "user_changed"
    event up to it (published in its change's transaction) is in what was read."""
    user = await database.fetch_one(USER_IN_SESSION, {"id": int(claims["sub"]), "session_id": claims["sid"]})
    if user is None:
        raise unauthorized("This account no longer exists.")
    if user.pop("session_open") is None:
        raise unauthorized("This session has ended; log in again.")
    return user | {"session_id": claims["sid"], "credential_expires": claims["exp"]}


# A stream ticket opens an event stream or a chat socket, where browsers cannot send headers and an
# access token in the URL would sit in logs and history. Signed, time-stamped and salted by itsdangerous
# (no JWT: no access token is a ticket, no ticket an access token), it works for TICKET_SECONDS; its
# stream lives as long as the access token it was traded for: {"sub": "42", "sid": "q3J...", "exp": 1763758044}.
TICKET_SECONDS = 30
stream_tickets = URLSafeTimedSerializer(SECRET_KEY, salt="stream-ticket")


def read_ticket(ticket: str) -> dict:
    """The claims of a stream ticket; 401 once it is older than TICKET_SECONDS, or if forged."""
    try:
        claims = stream_tickets.loads(ticket, max_age=TICKET_SECONDS)
    except SignatureExpired:
        raise unauthorized("This ticket has expired; ask for a new one (POST /api/auth/stream-ticket).")
    except BadSignature:
        claims = None
    if not claims_in_shape(claims):
        raise unauthorized("This ticket is not valid; ask for a new one (POST /api/auth/stream-ticket).")
    return claims


async def authenticate(connection: HTTPConnection, for_stream: bool = False) -> dict | None:
    """The user who sent the request, None if no credential came, 401 if a bad one did. for_stream=True
    also takes ?ticket= and ?token=, for clients that cannot send headers (EventSource, WebSocket)."""
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    if scheme and scheme.lower() != "bearer":
        raise unauthorized("Send your access token as 'Authorization: Bearer <token>'.")
    if not token and for_stream:
        if ticket := connection.query_params.get("ticket"):
            return await user_for_claims(read_ticket(ticket))
        token = connection.query_params.get("token", "")
    return await user_for_claims(read_token(token, "access")) if token else None


def requires_role(*roles: str, for_stream: bool = False, verified: bool = False):
    """Let a handler run only for a logged-in user with one of `roles` (then in request.state.user): 401 or
    403 otherwise. for_stream=True also takes ?ticket= and ?token=; verified=True: see check_verified."""
    def decorator(handler):
        @wraps(handler)
        async def guarded(request: Request) -> Response:
            user = await authenticate(request, for_stream)
            if user is None:
                raise unauthorized("Log in first: this needs an access token.")
            request.state.user = user  # before the checks: explain mode shows a refusal to whom it refused
            if user["role"] not in roles:
                raise HTTPException(403, f"This needs the role {' or '.join(roles)}.")
            if verified:
                check_verified(user)
            return await handler(request)
        guarded.roles, guarded.verified = roles, verified  # read by the OpenAPI document
        return guarded
    return decorator


login_required = requires_role(*ROLES)  # any role will do: "logged in"
verified_required = requires_role(*ROLES, verified=True)  # logged in, and allowed to write


def check_verified(user: dict) -> None:
    """With REQUIRE_VERIFIED_EMAIL on, refuse (403) a write by an unverified account: it may log in, read, verify."""
    if REQUIRE_VERIFIED_EMAIL and not user["email_verified"]:
        raise HTTPException(403, "Verify your email address first: open the link we mailed you, or ask for "
                                 "a new one (POST /api/auth/request-verify-token).")


# Guesses are counted in the database, so that every app process counts the same ones:
# "account:42", "name:nobody" (a login name nobody has), "address:203.0.113.7", "register:203.0.113.7".
# A guess is counted before the password is checked, so guesses sent at once are counted at once.
COUNT_GUESS = """
    INSERT INTO guesses (key, count, window_ends) VALUES (:key, 1, :window_ends)
    ON CONFLICT (key) DO UPDATE SET
        count = CASE WHEN guesses.window_ends > :now THEN guesses.count + 1 ELSE 1 END,
        window_ends = CASE WHEN guesses.window_ends > :now THEN guesses.window_ends ELSE :window_ends END
    RETURNING count, window_ends"""


async def count_guess(key: str, allowed: int, window_seconds: float = LOGIN_WINDOW_SECONDS) -> None:
    """Count a guess against `key`; 429 once more than `allowed` fall in its window. One statement adds
    and reads: PostgreSQL's INSERT ... ON CONFLICT locks the row until commit, SQLite writes one at a time,
    so of guesses sent at the same instant each sees the ones before it."""
    now = datetime.now(UTC)
    counted = await database.fetch_one(COUNT_GUESS, {
        "key": key, "now": utc_time(now), "window_ends": utc_time(now + timedelta(seconds=window_seconds))})
    if counted["count"] > allowed:
        retry_after = math.ceil((datetime.fromisoformat(counted["window_ends"]) - now).total_seconds())
        raise HTTPException(429, "Too many attempts; wait before trying again.", headers={"Retry-After": str(retry_after)})


def client_address(request: Request) -> str:
    """The client's address (behind Caddy, the one it vouches for), in one spelling, never 8,000 broken characters."""
    try:
        return str(ipaddress.ip_address(request.client.host))
    except (AttributeError, ValueError):
        return "unknown"


#### Requests: a JSON body, read and checked against its declaration
#
# Each body is declared once, as a JSON Schema object; `validate` enforces the few keywords used
# here (type, also as [type, "null"], required, anyOf of required, minLength, maxLength, pattern,
# enum, minimum, maximum, maxItems, items). Patterns are anchored and matched whole, so "alice\n" is not a username.


def invalid(field: str, problem: str) -> HTTPException:
    """A 422 that names the field, e.g. "title: must be at most 200 characters."."""
    return HTTPException(422, f"{field}: {problem}.")


async def read_body(request: Request, schema: dict) -> dict:
    """Parse the JSON body and validate it against `schema`; a body that needs nothing may be left out."""
    raw = await read_raw_body(request)
    if raw:
        return validate(parse_json(raw), schema)
    if body_needed(schema):
        raise HTTPException(400, "This request needs a JSON body.")
    return {}


def parse_json(raw: bytes | str):
    """Parse JSON strictly: NaN, Infinity, 5000-digit numbers and deep nesting are refused."""
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    try:
        return json.loads(raw, parse_constant=refuse)
    except (ValueError, RecursionError):  # JSONDecodeError, bad UTF-8 and huge ints are ValueErrors
        raise HTTPException(400, "The body is not valid JSON.")


async def read_raw_body(request: Request) -> bytes:
    """Read the body, refusing with 413 as soon as it passes 1 MiB (the limit is kept here, not in
    Starlette's max_body_size, because that one answers in plain text and every error here is JSON)."""
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY_BYTES:
                raise HTTPException(413, "The body is larger than 1 MiB.")
    except ClientDisconnect:  # the client left mid-body: nobody to answer, and nothing to log
        raise HTTPException(400, "The body ended before its Content-Length.")
    return bytes(body)


def body_needed(schema: dict) -> bool:
    """Whether a request must have a body: one that requires fields. (Reject's reason is optional.)"""
    return "required" in schema or "anyOf" in schema


def validate(body, schema: dict) -> dict:
    """Check a parsed body against its declaration; return the declared fields it holds."""
    if not isinstance(body, dict):
        raise HTTPException(422, "The body must be a JSON object.")
    for name in schema.get("required", []):
        if name not in body:
            raise invalid(name, "this field is required")
    if "anyOf" in schema and not any(option["required"][0] in body for option in schema["anyOf"]):
        names = [option["required"][0] for option in schema["anyOf"]]
        raise invalid(" or ".join(names), "the body must hold at least one of these fields")
    return {name: check_value(name, body[name], rule)
            for name, rule in schema["properties"].items() if name in body}


def check_value(name: str, value, rule: dict):
    """Check one value against its rule and return it, or raise a 422 naming the field."""
    kind = rule["type"]
    if isinstance(kind, list):  # ["string", "null"]: the value may also be null (it clears the field)
        if value is None:
            return None
        kind = kind[0]
    if kind == "string":
        if not isinstance(value, str):
            raise invalid(name, "must be a string")
        low, high = rule.get("minLength", 0), rule.get("maxLength", MAX_BODY_BYTES)
        if not low <= len(value) <= high:
            raise invalid(name, f"must be {low} to {high} characters long")
        if re.search("[\x00\ud800-\udfff]", value):  # legal in JSON, but no database stores them as text
            raise invalid(name, "must not contain NUL characters or lone surrogates")
        if "pattern" in rule and not re.fullmatch(rule["pattern"], value):
            raise invalid(name, "is not in the expected form")
        if "enum" in rule and value not in rule["enum"]:
            raise invalid(name, "must be one of " + ", ".join(rule["enum"]))
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


URL = {"type": "string", "maxLength": 2000,  # http(s), a host name or IPv4 address, an optional port
       "pattern": r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/\S*)?$"}
URL_LIST = {"type": "array", "maxItems": 10, "items": URL}
TITLE = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": r"^.*\S.*$"}


#### Auth: register, login, refresh, logout, me, stream tickets, change password
#
# A mail (a verification link, a notice) is queued with `await queue_mail(*notice_mail(user, "..."))` inside the
# `async with publishing():` block of what causes it: it commits with the change, or not at all, and is sent later
# (Appendix I), never holding up a request. Each counts against its recipient (MAILS_PER_HOUR); links go before notices.


USERNAME = {"type": "string", "pattern": r"^[A-Za-z0-9_.-]{3,32}$"}

REGISTER_BODY = {"type": "object", "required": ["username", "email", "password"],
                 "examples": [{"username": "alice", "email": "alice@example.com", "password": "correct horse"}],
                 "properties": {
    "username": USERNAME,
    # A plain address, ASCII only: no quoting, comments, groups, encoded words or lists, each of which a
    # mail server could read as more, or other, recipients than the one the account was made with.
    "email": {"type": "string", "maxLength": 254,
              "pattern": r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"},
    "password": {"type": "string", "minLength": 8, "maxLength": 72,
                 "description": "8 characters to 72 bytes of UTF-8 (bcrypt's limit)"},
}}
LOGIN_BODY = {"type": "object", "required": ["username", "password"],
              "examples": [{"username": "alice", "password": "correct horse"}], "properties": {
    "username": {"type": "string", "maxLength": 254, "description": "the username or the email"},
    "password": {"type": "string", "maxLength": 1000},
}}
REFRESH_BODY = {"type": "object", "required": ["refresh_token"], "examples": [{"refresh_token": "eyJhbGciOi..."}],
                "properties": {"refresh_token": {"type": "string", "maxLength": 2000}}}
PASSWORD_BODY = {"type": "object", "required": ["current_password", "new_password"],
                 "examples": [{"current_password": "correct horse", "new_password": "battery staple"}], "properties": {
    "current_password": LOGIN_BODY["properties"]["password"],
    "new_password": REGISTER_BODY["properties"]["password"],
}}
USER_COLUMNS = "id, username, email, role, created_at, email_verified, security_stamp"
# An address is taken by its account, and, while its undo link works, by the account that moved away from it.
ADDRESS_TAKEN = "(email = :email OR moved_from = :email AND moved_until > :now)"


def user_out(row) -> dict:
    """A user as clients see it: never the password hash."""
    return {"id": row["id"], "username": row["username"], "email": row["email"],
            "role": row["role"], "created_at": row["created_at"], "email_verified": bool(row["email_verified"])}


async def hash_new_password(password: str, field: str = "password") -> str:
    """Hash a password being set, in a bcrypt thread; 422 past bcrypt's 72 bytes."""
    if len(password.encode()) > 72:
        raise invalid(field, "must be at most 72 bytes (bcrypt's limit)")
    return await in_bcrypt_thread(hash_password, password)


async def add_user(fields: dict, role: str, verified: bool = False) -> dict | None:
    """Store a user from a validated registration body, mailing an unverified one a link; None if taken."""
    password_hash = await hash_new_password(fields["password"])
    async with publishing():
        # ON CONFLICT DO NOTHING: a name taken meanwhile returns no row, on SQLite and PostgreSQL alike.
        user = await database.fetch_one(
            "INSERT INTO users (username, email, password_hash, role, created_at, email_verified) "
            "VALUES (:username, :email, :password_hash, :role, :now, :verified) "
            "ON CONFLICT DO NOTHING RETURNING " + USER_COLUMNS,
            {"username": fields["username"], "email": fields["email"].lower(), "password_hash": password_hash,
             "role": role, "now": utc_now(), "verified": int(verified)})
        if user and not verified:
            await queue_mail(*verification_mail(user))
    return user


async def register(request: Request) -> Response:
    """Create an account with the user role; a role asked for in the body is ignored."""
    fields = await read_body(request, REGISTER_BODY)
    # Counted first, so that asking whether an address has an account is throttled like any try;
    # refused before bcrypt runs, so a taken name costs no hash and cannot load the server.
    await count_guess("register:" + client_address(request), REGISTRATIONS_PER_ADDRESS)
    taken = await database.fetch_one("SELECT 1 FROM users WHERE LOWER(username) = LOWER(:username) OR " + ADDRESS_TAKEN,
                                     {"username": fields["username"], "email": fields["email"].lower(), "now": utc_now()})
    if taken or (user := await add_user(fields, "user")) is None:  # None: taken meanwhile
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
    name = fields["username"].lower()
    user = await database.fetch_one(
        "SELECT id, password_hash FROM users WHERE LOWER(username) = :name OR email = :name", {"name": name})
    # Each name typed is a key of its own ("login:carol", "login:carol@example.com", "login:nobody"), so a
    # lockout tells nothing of any other name: not whether it has an account, nor whether it is carol's.
    account, address = "login:" + name, "address:" + client_address(request)
    async with database.transaction():  # a guess refused by either key is counted by neither
        await count_guess(account, LOGIN_FAILURES_PER_ACCOUNT)
        await count_guess(address, LOGIN_FAILURES_PER_ADDRESS)
    # A name nobody has is checked against a dummy hash: it costs one full bcrypt check like a wrong
    # password, so the time of the answer does not tell whether the account exists.
    password_hash = user["password_hash"] if user else DUMMY_PASSWORD_HASH
    if not await in_bcrypt_thread(check_password, fields["password"], password_hash) or user is None:
        raise unauthorized("Wrong username or password.")  # the same words for both, on purpose
    # The right password: the account starts afresh, and the address is charged no guess.
    await database.execute("DELETE FROM guesses WHERE key = :account", {"account": account})
    await database.execute("UPDATE guesses SET count = count - 1 WHERE key = :address AND count > 0", {"address": address})
    return JSONResponse(await start_session(user["id"]))


END_SESSION = "UPDATE sessions SET ended_at = :now WHERE id = :id AND user_id = :user_id AND ended_at IS NULL"


async def refresh(request: Request) -> Response:
    """Trade a refresh token for new tokens; each refresh token works once."""
    old_token = (await read_body(request, REFRESH_BODY))["refresh_token"]
    claims = read_token(old_token, "refresh")
    user_id, session_id = int(claims["sub"]), claims["sid"]
    new_token, expires_at = new_refresh_token(user_id, session_id)
    # One conditional statement rotates: only the current token matches, so of two refreshes racing with one token,
    # the second finds it gone (PostgreSQL makes it wait for the first's row lock, then looks again).
    rotated = await database.fetch_one(
        "UPDATE sessions SET refresh_hash = :new_hash, expires_at = :expires_at WHERE id = :id "
        "AND refresh_hash = :old_hash AND ended_at IS NULL RETURNING id",
        {"new_hash": token_hash(new_token), "expires_at": expires_at, "id": session_id, "old_hash": token_hash(old_token)})
    if rotated is None:
        # An old token again: stolen, or its owner's copy was. Thief and owner look alike, so it ends for
        # both (a client sending one token twice, say from two tabs, is logged out: one refresh at a time).
        await database.execute(END_SESSION, {"now": utc_now(), "id": session_id, "user_id": user_id})
        raise unauthorized("This refresh token is no longer valid; log in again.")
    return JSONResponse(tokens_out(user_id, session_id, new_token))


@login_required
async def logout(request: Request) -> Response:
    """End the session of a refresh token of yours: its refresh and access tokens stop working."""
    token = (await read_body(request, REFRESH_BODY))["refresh_token"]
    with suppress(HTTPException):  # a token that is no valid refresh token ends nothing
        claims = read_token(token, "refresh")
        await database.execute(END_SESSION, {"now": utc_now(), "id": claims["sid"], "user_id": request.state.user["id"]})
    return Response(status_code=204)


@login_required
async def me(request: Request) -> Response:
    """Show the logged-in user."""
    return JSONResponse(user_out(request.state.user))


@login_required
async def stream_ticket(request: Request) -> Response:
    """Trade your access token for a ticket that opens event streams and chat sockets for 30 s."""
    user = request.state.user
    ticket = stream_tickets.dumps({"sub": str(user["id"]), "sid": user["session_id"], "exp": user["credential_expires"]})
    return JSONResponse({"ticket": ticket, "expires_in": TICKET_SECONDS})


async def check_current_password(user: dict, password: str) -> None:
    """403 unless it is the user's password; each try counts as a failed login, so a stolen token cannot guess on."""
    await count_guess(f"account:{user['id']}", LOGIN_FAILURES_PER_ACCOUNT)
    current = await database.fetch_val("SELECT password_hash FROM users WHERE id = :id", {"id": user["id"]})
    if not await in_bcrypt_thread(check_password, password, current):
        raise HTTPException(403, "current_password: that is not your password.")
    await database.execute("DELETE FROM guesses WHERE key = :account", {"account": f"account:{user['id']}"})  # as login does


@login_required
async def change_password(request: Request) -> Response:
    """Change your password: your other sessions end, links mailed to you die, and you are mailed a notice."""
    fields, user = await read_body(request, PASSWORD_BODY), request.state.user
    await check_current_password(user, fields["current_password"])
    password_hash = await hash_new_password(fields["new_password"], "new_password")
    async with publishing():  # publishing: its notice is mailed in the same transaction
        await database.execute("UPDATE users SET password_hash = :hash, security_stamp = security_stamp + 1 WHERE id = :id",
                               {"hash": password_hash, "id": user["id"]})
        await database.execute("UPDATE sessions SET ended_at = :now WHERE user_id = :user_id AND id <> :id "
                               "AND ended_at IS NULL", {"now": utc_now(), "user_id": user["id"], "id": user["session_id"]})
        await queue_mail(*notice_mail(user, "Your password was changed, and every other login of yours has ended."))
    return Response(status_code=204)


#### Pages and ids: ?limit= and ?cursor= for every list, newest first; {blog_id:id} in paths
#
# A cursor is the id of the last item on the previous page: after a page ending with id 42, "?cursor=42"
# gives the items below 42. Clients should pass it back untouched, so that its form may change one day.


LIMIT = {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}
CURSOR = {"type": "string", "pattern": "^[0-9]{1,9}$", "description": "next_cursor of the previous page"}
NO_CURSOR = 1_000_000_000  # the first page: above every id, as no id has more than 9 digits


def query_param(request: Request, name: str, rule: dict):
    """A query parameter checked like a body field: None if absent, a 422 (never a 500) for any bad text."""
    value = request.query_params.get(name)
    if value is None or rule["type"] != "integer":
        return value if value is None else check_value(name, value, rule)
    if not re.fullmatch(r"-?[0-9]{1,18}", value):  # int() would also take " 5", "1_0" and "١٢"
        raise invalid(name, "must be an integer")
    return check_value(name, int(value), rule)


def page_params(request: Request) -> tuple[int, int]:
    """Read ?limit= and ?cursor=, the cursor as the id every item on the page is below: "id < :before"."""
    limit = query_param(request, "limit", LIMIT) or LIMIT["default"]
    cursor = query_param(request, "cursor", CURSOR)
    return limit, NO_CURSOR if cursor is None else int(cursor)


def page_of(rows: list, limit: int, item_out) -> dict:
    """Turn `limit + 1` fetched rows into a page: the extra row only says a next page exists."""
    items = [item_out(row) for row in rows[:limit]]
    return {"items": items, "next_cursor": str(items[-1]["id"]) if len(rows) > limit else None}


class IdConvertor(IntegerConvertor):
    """{blog_id:id} in a route: up to 9 digits, so a longer number is a 404, not an integer overflow (a 500)."""

    regex = "[0-9]{1,9}"


register_url_convertor("id", IdConvertor())


#### Versions: ETag, If-Match and If-None-Match, so that a save made from an old copy is refused
#
# A blog or a draft is sent with an ETag naming its version (RFC 9110, section 8.8.3); a save
# without If-Match applies as it always did, so older clients keep working:
#
#   GET /api/session/draft                                          -> 200, ETag: "3.2026-11-21T20:17:24.123Z"
#   POST /api/session/draft, If-Match: "3.2026-11-21T20:17:24.123Z"     -> 200, a new ETag; 412 if saved since
#   GET /api/session/draft, If-None-Match: "4.2026-11-21T20:18:02.511Z" -> 304, no body, if still that version


def etag_matches(header: str, etag: str, weak_too: bool) -> bool:
    """Whether an If-Match or If-None-Match header ('*', or a list: '"a", W/"b"') names `etag`."""
    tags = [tag for weak, tag in re.findall(r'(W/)?("[^"]*")', header) if weak_too or not weak]
    return header.strip() == "*" or etag in tags


def check_if_match(request: Request, etag: str | None, detail: str) -> None:
    """412 with the current ETag unless If-Match is absent or names `etag` (None: none); call it under a row lock."""
    if_match = request.headers.get("if-match")  # compared strongly: a weak tag never matches it
    if if_match is not None and not (etag and etag_matches(if_match, etag, weak_too=False)):
        raise HTTPException(412, detail, headers={"ETag": etag} if etag else None)


def unless_unchanged(request: Request, response: Response) -> Response:
    """The response, or a 304 without its body if the client's If-None-Match names its ETag."""
    etag = response.headers.get("etag")
    if etag and etag_matches(request.headers.get("if-none-match", ""), etag, weak_too=True):
        return Response(status_code=304, headers={"ETag": etag})
    return response


#### Live events: publish() beside the change; each section says what it wants to hear of
#
# Every change clients hear of live is a row of the events table, written by publish() in the change's
# transaction: a rollback publishes nothing, a commit cannot be lost. Every process hears every event, in
# id order, and hands it to the functions its sections registered with @on_event (between processes: Appendix D):
#
#   async with publishing(): ...; await publish("blog_pending", blog_id=5, ...)
#     -> events row 17, committed with the change
#     -> in every process: each @on_event("blog_pending") function gets
#        {"id": 17, "type": "blog_pending", "data": {"blog_id": 5, ...}}
#
# Those functions never wait: they offer() to each listener's (a stream's, a socket's) bounded queue. A
# listener whose queue is full has stopped reading: it is cut off, so it can never slow the others.

# Event kind -> the functions that hear it, registered by @on_event in the sections below.
event_handlers: dict[str, list[Callable[[dict], None]]] = {}


def on_event(*kinds: str):
    """Have the decorated function called with every event of these kinds, in every process."""
    def register(handler):
        for kind in kinds:
            event_handlers.setdefault(kind, []).append(handler)
        return handler
    return register


# Inside a publishing() block, what this process does itself once it commits: {"public_changed"}.
publishing_now: ContextVar[set[str] | None] = ContextVar("publishing_now", default=None)


@asynccontextmanager
async def publishing() -> AsyncIterator[None]:
    """A transaction that may publish(): its events go out once it commits, in the order of their ids."""
    after_commit = set()
    async with database.transaction():
        await database.lock_event_log()
        token = publishing_now.set(after_commit)
        try:
            yield
        finally:
            publishing_now.reset(token)
    if "public_changed" in after_commit:
        # Here at once, after the commit: a client that saw the change cannot then be sent an
        # older page by this process. (The others empty theirs when the event reaches them.)
        public_cache.clear()


async def publish(kind: str, **data) -> None:
    """Write an event to the log, in the transaction of the change it tells of."""
    if publishing_now.get() is None:
        raise RuntimeError("publish() belongs inside `async with publishing():`, beside its change.")
    event_id = await database.fetch_val(
        "INSERT INTO events (kind, data, created_at) VALUES (:kind, :data, :now) RETURNING id",
        {"kind": kind, "data": json.dumps(data), "now": utc_now()})
    await database.notify(str(event_id))  # a wake-up: every process then reads the log after what it has seen
    explain_step("event", type=kind, id=event_id)


# Each process's event bus (started by lifespan), woken by a notification sent once the change commits
# (PostgreSQL's NOTIFY; on SQLite a stand-in in this process) or every EVENT_POLL_SECONDS, reads the events
# after the last id it has seen and deliver()s each. Publishing transactions take turns (lock_event_log), so
# ids commit in order and "id > last seen" never passes over one. A dropped listener is remade, then what it
# missed is read (Appendix D).
async def run_event_bus() -> None:
    """This process's end of the bus, until cancelled: deliver new events, and tidy the tables."""
    woken = asyncio.Event()
    listener = asyncio.create_task(database.listen(lambda payload: woken.set()))
    last_id = await database.fetch_val("SELECT COALESCE(MAX(id), 0) FROM events")
    tidy_at = 0.0
    try:
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow the cancellation that
            # arrives as its wait ends, and this loop would then outlive the app's shutdown, which waits on it.
            with suppress(TimeoutError):
                async with asyncio.timeout(EVENT_POLL_SECONDS):
                    await woken.wait()
            woken.clear()
            try:
                last_id = await deliver_events_after(last_id)
                if time.monotonic() > tidy_at:
                    await tidy_tables()
                    tidy_at = time.monotonic() + 60
            except DATABASE_ERRORS as error:  # read again at the next wake-up
                log.warning("Events: could not read the event log (%s)", error)
    finally:
        listener.cancel()


async def deliver_events_after(last_id: int) -> int:
    """Hand every event after `last_id` to this process's listeners, in order; return the last id."""
    while rows := await database.fetch_all(
            "SELECT id, kind, data FROM events WHERE id > :after ORDER BY id LIMIT 500", {"after": last_id}):
        for event in map(event_of, rows):
            (await explain_delivery(event)) if EXPLAIN else deliver(event)  # explain mode: Appendix J
        last_id = rows[-1]["id"]
    # The log went back (a backup restored under a running app)? "id > last seen" would skip every new event.
    if last_id > (newest := await database.fetch_val("SELECT COALESCE(MAX(id), 0) FROM events")):
        log.warning("Events: the event log went back from id %s to %s (restored?); carrying on", last_id, newest)
        return newest
    return last_id


def event_of(row: dict) -> dict:
    """An event as listeners get it: {"id": 17, "type": "blog_pending", "data": {"blog_id": 5, ...}}."""
    return {"id": row["id"], "type": row["kind"], "data": json.loads(row["data"])}


def deliver(event: dict) -> None:
    """Hand one event to the functions of this process that registered for its kind (@on_event)."""
    for handler in event_handlers.get(event["type"], []):
        handler(event)


async def tidy_tables() -> None:
    """Forget what has aged out: old events (all but the newest), expired sessions, stale guesses."""
    now = datetime.now(UTC)
    await database.execute("DELETE FROM events WHERE created_at < :before AND id < (SELECT MAX(id) FROM events)",
                           {"before": utc_time(now - timedelta(hours=EVENT_RETENTION_HOURS))})
    await database.execute("DELETE FROM sessions WHERE expires_at < :now", {"now": utc_time(now)})
    await database.execute("DELETE FROM guesses WHERE window_ends < :now", {"now": utc_time(now)})


async def public_pages_changed() -> None:
    """Say that what everyone sees changed: every process empties its public cache, this one on commit."""
    await publish("public_changed")
    publishing_now.get().add("public_changed")


@dataclass(frozen=True)
class Closing:
    """Put in a listener's queue to end its connection: why, and the WebSocket close code."""
    reason: str
    code: int = 1008  # policy violation: the rights it was opened with no longer hold


FELL_BEHIND = Closing("You fell behind; reconnect.", code=1013)  # 1013: try again later
SERVER_STOPPING = Closing("The server is restarting; reconnect.")
DATABASE_DOWN = Closing("The database is unavailable for a moment; reconnect shortly.", code=1013)
TOKEN_EXPIRED = Closing("Your token has expired; reconnect with a new one.")

# User id -> the queues of that user's streams and sockets, to end them when their rights change,
# each with the as_of_event of the rights it was let in with.
user_connections: dict[int, dict[asyncio.Queue, int]] = {}


def offer(queue: asyncio.Queue, item) -> None:
    """Queue an item without waiting; a full queue's listener has stopped reading, and is cut off."""
    try:
        queue.put_nowait(item)
    except asyncio.QueueFull:
        end(queue, FELL_BEHIND)


def end(queue: asyncio.Queue, closing: Closing) -> None:
    """Tell a listener to end its connection, at once: what it had not read yet is dropped."""
    while not queue.empty():
        queue.get_nowait()
    queue.put_nowait(closing)


def count_connection(user: dict, queue: asyncio.Queue) -> None:
    """Count a stream or socket as one of its user's; 429 past the limit. forget_connection undoes it."""
    queues = user_connections.setdefault(user["id"], {})
    if len(queues) >= LIVE_CONNECTIONS_PER_USER:
        raise HTTPException(429, f"You already have {LIVE_CONNECTIONS_PER_USER} event streams and chat sockets "
                                 "open here; close one first.")
    queues[queue] = user["as_of_event"]


def forget_connection(user: dict, queue: asyncio.Queue) -> None:
    """Stop counting a stream or socket that has ended."""
    queues = user_connections.get(user["id"], {})
    queues.pop(queue, None)
    if not queues:
        user_connections.pop(user["id"], None)


@on_event("user_changed")
def end_connections_of_changed_user(event: dict) -> None:
    """A new role, or no account: end the streams and sockets let in before it (after it, rights were read anew)."""
    for queue, as_of_event in user_connections.get(event["data"]["user_id"], {}).items():
        if event["id"] > as_of_event:
            end(queue, Closing("Your account has changed; reconnect."))


#### The record of decisions: record() beside the change, in the same transaction
#
# Moderation leaves a trace: who submitted, edited, reviewed or deleted a blog, who changed whose role or
# deleted whose account, with what detail. Like publish(), record() writes in the change's transaction: a
# rollback leaves no entry, and no entry stands without its change. Rows are only added, with usernames as
# they were (a deleted account still shows by name). An entry, as GET /api/audit and a blog's history send it:
#
#   {"id": 9, "action": "blog_rejected", "actor": "ann", "created_at": "2026-11-21T20:17:24.123Z",
#    "blog_id": 5, "target": "bob", "detail": {"reason": "Please cite your sources."}}

RECORD_ACTIONS = ("blog_submitted", "blog_edited", "blog_resubmitted", "blog_approved", "blog_rejected",
                  "blog_deleted", "role_changed", "user_deleted", "comment_deleted", "feature_request_triaged")


async def record(action: str, actor: dict, blog_id: int | None = None, target: str | None = None,
                 detail: dict | None = None) -> None:
    """Add an entry to the record: `actor` (a user) did `action`, in the transaction of the change."""
    if publishing_now.get() is None:
        raise RuntimeError("record() belongs inside `async with publishing():`, beside its change.")
    await database.execute(
        "INSERT INTO records (action, actor, blog_id, target, detail, created_at) "
        "VALUES (:action, :actor, :blog_id, :target, :detail, :now)",
        {"action": action, "actor": actor["username"], "blog_id": blog_id, "target": target,
         "detail": json.dumps(detail or {}), "now": utc_now()})
    explain_step("record", action=action)


RECORD_SELECT = "SELECT id, action, actor, created_at, blog_id, target, detail FROM records"


def record_out(row: dict) -> dict:
    """An entry as clients see it: its detail a JSON object."""
    return row | {"detail": json.loads(row["detail"])}


#### Users: profiles and follows


USER_BY_NAME = "SELECT " + USER_COLUMNS + " FROM users WHERE LOWER(username) = LOWER(:username)"
# A public profile: never the email. Its counts see approved blogs only.
PROFILE_SELECT = """
    SELECT u.id, u.username, u.display_name, u.bio, u.avatar_url, u.created_at,
           (SELECT COUNT(*) FROM follows WHERE followed_id = u.id) AS followers,
           (SELECT COUNT(*) FROM follows WHERE follower_id = u.id) AS following,
           (SELECT COUNT(*) FROM blogs WHERE author_id = u.id AND status = 'approved') AS blogs
    FROM users u"""
PROFILE_BY_ID = PROFILE_SELECT + " WHERE u.id = :id"
PROFILE_FIELDS = ("display_name", "bio", "avatar_url")
PROFILE_BODY = {"type": "object", "examples": [{"display_name": "Alice", "bio": "I write about Starlette.",
                                                 "avatar_url": "https://example.com/alice.png"}],
                "anyOf": [{"required": [name]} for name in PROFILE_FIELDS + ("email",)],
                "properties": {  # null clears a field
    "display_name": {"type": ["string", "null"], "maxLength": 50},
    "bio": {"type": ["string", "null"], "maxLength": 500},
    "avatar_url": URL | {"type": ["string", "null"]},
    "email": REGISTER_BODY["properties"]["email"] | {"description": "a new address: needs current_password; the "
                                                                    "account moves there once the link mailed to it is opened"},
    "current_password": LOGIN_BODY["properties"]["password"] | {"description": "needed with email"},
}}


def check_username(username: str) -> str:
    """A username from a path; one that no user could have is unknown (404), whatever its bytes."""
    if not re.fullmatch(USERNAME["pattern"], username):
        raise HTTPException(404, f"There is no user {username!r}.")
    return username


async def user_id_named(username: str) -> int:
    """The id of the user with this name (in any case); 404 if there is none."""
    if (user := await database.fetch_one(USER_BY_NAME, {"username": check_username(username)})) is None:
        raise HTTPException(404, f"There is no user {username!r}.")
    return user["id"]


async def get_profile(request: Request) -> Response:
    """Show a user's public profile, with how many follow them, they follow, and public blogs they have."""
    user_id = await user_id_named(request.path_params["username"])
    return JSONResponse(await database.fetch_one(PROFILE_BY_ID, {"id": user_id}))


@login_required
async def update_profile(request: Request) -> Response:
    """Change your display name, bio or avatar, or ask for a new address; a field left out stays, null clears it."""
    fields, user = await read_body(request, PROFILE_BODY), request.state.user
    if "email" in fields:
        if "current_password" not in fields:
            raise invalid("current_password", "is needed to change the address")
        await check_current_password(user, fields["current_password"])
        # Counted like registrations, and per account a day: asking is how one would walk a list of addresses.
        await count_guess("register:" + client_address(request), REGISTRATIONS_PER_ADDRESS)
        await count_guess(f"address-change:{user['id']}", ADDRESS_CHANGES_PER_DAY, 24 * 3600)
    if profile := {name: value for name, value in fields.items() if name in PROFILE_FIELDS}:
        check_verified(user)  # a profile is public writing
    async with publishing():  # the profile and the request for an address go together, or not at all
        if profile:
            # Only names from PROFILE_FIELDS are joined into the SQL; their values travel as parameters.
            assignments = ", ".join(f"{name} = :{name}" for name in profile)
            await database.execute("UPDATE users SET " + assignments + " WHERE id = :id", profile | {"id": user["id"]})
        if "email" in fields and fields["email"].lower() != user["email"]:
            await ask_for_address(user, fields["email"].lower())
    return JSONResponse(await database.fetch_one(PROFILE_BY_ID, {"id": user["id"]}))


async def profile_page(request: Request, query: str, values: dict) -> Response:
    """A page of profiles from a PROFILE_SELECT query ending in WHERE ..., newest accounts first."""
    limit, before = page_params(request)
    rows = await database.fetch_all(query + " AND u.id < :before "
                                    "ORDER BY u.id DESC LIMIT :limit", values | {"before": before, "limit": limit + 1})
    return JSONResponse(page_of(rows, limit, dict))


@verified_required
async def follow_user(request: Request) -> Response:
    """Follow a user; following twice is following once."""
    followed, follower = await user_id_named(request.path_params["username"]), request.state.user["id"]
    if followed == follower:
        raise HTTPException(409, "You cannot follow yourself.")
    # WHERE EXISTS: an account deleted since the look-up gains no follower (at that instant: a 404, deleted_meanwhile).
    await database.execute(
        "INSERT INTO follows (follower_id, followed_id, created_at) SELECT :follower, :followed, :now WHERE EXISTS "
        "(SELECT 1 FROM users WHERE id = :followed) AND EXISTS (SELECT 1 FROM users WHERE id = :follower) "
        "ON CONFLICT DO NOTHING", {"follower": follower, "followed": followed, "now": utc_now()})
    return Response(status_code=204)


@verified_required
async def unfollow_user(request: Request) -> Response:
    """Stop following a user; it is no error if you did not."""
    followed = await user_id_named(request.path_params["username"])
    await database.execute("DELETE FROM follows WHERE follower_id = :follower AND followed_id = :followed",
                           {"follower": request.state.user["id"], "followed": followed})
    return Response(status_code=204)


async def list_followers(request: Request) -> Response:
    """List the profiles of a user's followers, newest accounts first."""
    user_id = await user_id_named(request.path_params["username"])
    # IN, not a JOIN: SQLite then walks the follower ids in order and stops at the page (joined, it
    # counted the posts and follows of all 10,000 followers of one author before sorting them).
    return await profile_page(request, PROFILE_SELECT + " WHERE u.id IN "
                                       "(SELECT follower_id FROM follows WHERE followed_id = :id)", {"id": user_id})


async def list_following(request: Request) -> Response:
    """List the profiles of the users a user follows, newest accounts first."""
    user_id = await user_id_named(request.path_params["username"])
    return await profile_page(request, PROFILE_SELECT + " JOIN follows f ON f.followed_id = u.id "
                                       "WHERE f.follower_id = :id", {"id": user_id})


#### Blogs: write, review, read, search


BLOG_COLUMNS = """
    SELECT b.id, b.title, b.content, b.images, b.status, b.reject_reason, b.author_id,
           u.username AS author, b.created_at, b.updated_at, b.version,
           (SELECT COUNT(*) FROM likes l WHERE l.blog_id = b.id) AS likes"""
BLOG_SELECT = BLOG_COLUMNS + " FROM blogs b JOIN users u ON u.id = b.author_id"
BLOG_BY_ID = BLOG_SELECT + " WHERE b.id = :id"


def blog_out(row) -> dict:
    """A blog as clients see it; the reject reason only while it is rejected; its version is the ETag."""
    blog = dict(row)
    blog["images"] = json.loads(blog["images"])
    del blog["version"]
    if blog["status"] != "rejected":
        del blog["reject_reason"]
    return blog


def blog_etag(row) -> str:
    """A blog's ETag, '"3.12"': its version and its likes, which change without a write: no 304 hides one."""
    return f'"{row["version"]}.{row["likes"]}"'


def blog_response(row, status: int = 200) -> Response:
    """A blog as clients see it, with its ETag."""
    return JSONResponse(blog_out(row), status, headers={"ETag": blog_etag(row)})


BLOG_CHANGED = ("This blog has changed since you read it (its ETag is now the one sent with this answer): "
                "GET it again, carry your edit over, and send it with the new ETag in If-Match.")
BLOG_BODY = {"type": "object", "required": ["title", "content"],
             "examples": [{"title": "Hello", "content": "# Hello\n\nMy *first* post.", "images": []}], "properties": {
    "title": TITLE,
    "content": {"type": "string", "minLength": 1, "maxLength": 100_000},
    "images": URL_LIST,
}}
REJECT_BODY = {"type": "object", "examples": [{"reason": "Please cite your sources."}],
               "properties": {"reason": {"type": "string", "maxLength": 2000}}}


def may_see(blog: dict, user: dict | None) -> bool:
    """Approved blogs are public; the others only to their author and to reviewers."""
    return (blog["status"] == "approved" or user is not None
            and (user["id"] == blog["author_id"] or user["role"] in ("approver", "admin")))


async def get_visible_blog(blog_id: int, user: dict | None, locking: bool = False) -> dict:
    """Fetch a blog the user may see (locking=True: its row, till the transaction ends); 404 hides the rest."""
    blog = await database.fetch_one(BLOG_BY_ID + (database.LOCKING if locking else ""), {"id": blog_id})
    if blog is None or not may_see(blog, user):
        raise HTTPException(404, f"There is no blog {blog_id}.")
    return blog


# Where a database splits words and Python would not: "other numbers" (፩: PostgreSQL), 21 old marks (ᦰ: SQLite).
SPLIT_AS_THE_DATABASES_DO = dict.fromkeys([*range(0x19B0, 0x19C1), 0x19C8, 0x19C9, 0x1CF2, 0x1CF3, *(
    code for code in range(0x30000) if unicodedata.category(chr(code)) == "No")], " ")


def search_words(text: str) -> list[str]:
    """The words ?q= matches, as both databases index them: "Über-Café 2" -> ["über", "café", "2"]. Python folds
    case (SQLite's LOWER folds ASCII only, PostgreSQL's its locale's) after NFKC (U + combining ¨ is Ü)."""
    return re.findall(r"[^\W_]+", unicodedata.normalize("NFKC", text).casefold().translate(SPLIT_AS_THE_DATABASES_DO))


# A search is the heaviest read anyone can ask for: in each process searches take turns (see lifespan), so a
# flood of them queues behind itself, not before every other request (bench.py times /health while 4 search).
SEARCH_QUERY = {"type": "string", "maxLength": SEARCH_MAX_CHARACTERS,
                "description": "words that the title or content must all hold, whole and in any case"}
AUTHOR_QUERY = {"type": "string", "maxLength": 32, "description": "a username"}


async def list_blogs(request: Request) -> Response:
    """List approved blogs, newest first; ?q= searches title and content, ?author= by username."""
    limit, before = page_params(request)
    query, author = query_param(request, "q", SEARCH_QUERY), query_param(request, "author", AUTHOR_QUERY)
    # Only the true front page is cached: any other parameter (a cursor, a filter) asks the database.
    front_page = f"front page of {limit}" if request.query_params.keys() <= {"limit"} else None
    if front_page and (cached := public_cache.response(front_page)):
        return cached
    version = public_cache.version
    async with request.app.state.search_turns if query is not None else nullcontext():
        rows = await find_approved_blogs(query, author, before, limit + 1)
        response = JSONResponse(page_of(rows, limit, blog_out))
    if front_page:
        public_cache.keep(front_page, response, version)
    return response


# A search by one author: "or :author is null" instead would keep each database from reading that
# author's posts through blogs_author_status_id in a plan it keeps for the statement.
BY_AUTHOR_NAMED = " AND author_id = (SELECT id FROM users WHERE LOWER(username) = LOWER(:author))"


async def find_approved_blogs(query: str | None, author: str | None, before: int, limit: int) -> list[dict]:
    """Approved blogs, newest first, below the cursor; with a query, those holding all its words."""
    values = {"before": before, "author": author, "limit": limit}
    if query is None and author is None:
        return await database.fetch_all(BLOG_SELECT + " WHERE b.id < :before AND b.status = 'approved' "
                                        "ORDER BY b.id DESC LIMIT :limit", values)
    if query is None:  # one author's posts, through blogs_author_status_id (see BY_AUTHOR)
        return await database.fetch_all(
            BLOG_COLUMNS + " FROM blogs b" + database.BY_AUTHOR + " JOIN users u ON u.id = b.author_id "
            "WHERE b.id < :before AND b.status = 'approved'" + BY_AUTHOR_NAMED + " ORDER BY b.id DESC LIMIT :limit", values)
    if not (words := search_words(query)):
        return []  # only punctuation: no word to find
    values["search"] = database.search_terms(words)
    found = database.SEARCH.format(by_author=BY_AUTHOR_NAMED if author is not None else "")
    return await database.fetch_all(BLOG_COLUMNS + " FROM (" + found + ") AS found JOIN blogs b ON b.id = found.id "
                                    "JOIN users u ON u.id = b.author_id ORDER BY b.id DESC", values)


@requires_role("approver", "admin")
async def list_pending_blogs(request: Request) -> Response:
    """List the blogs waiting for review, newest first."""
    limit, before = page_params(request)
    rows = await database.fetch_all(BLOG_SELECT + " WHERE b.status = 'pending' AND b.id < :before "
                                    "ORDER BY b.id DESC LIMIT :limit", {"before": before, "limit": limit + 1})
    return JSONResponse(page_of(rows, limit, blog_out))


def blog_values(fields: dict) -> dict:
    """The stored form of a validated blog body."""
    return {"title": fields["title"], "content": fields["content"], "images": json.dumps(fields.get("images", [])),
            "search_words": " ".join(search_words(fields["title"] + "\n" + fields["content"]))}


def pending_event(blog: dict) -> dict:
    """What reviewers hear of a blog waiting for review, new or edited, with the ETag that a review
    of that version sends in If-Match: {"blog_id": 5, "title": "New Blog", "author_id": 2, "etag": "\"1.0\""}."""
    return {"blog_id": blog["id"], "title": blog["title"], "author_id": blog["author_id"], "etag": blog_etag(blog)}


@verified_required
async def create_blog(request: Request) -> Response:
    """Submit a blog; it waits as pending until an approver or admin reviews it."""
    fields = await read_body(request, BLOG_BODY)
    async with publishing():
        row = await database.fetch_one(
            "INSERT INTO blogs (title, content, images, search_words, status, author_id, created_at, updated_at) "
            "VALUES (:title, :content, :images, :search_words, 'pending', :author_id, :now, :now) RETURNING id",
            blog_values(fields) | {"author_id": request.state.user["id"], "now": utc_now()})
        blog = await database.fetch_one(BLOG_BY_ID, {"id": row["id"]})
        await record("blog_submitted", request.state.user, blog_id=blog["id"], detail={"title": blog["title"]})
        await publish("blog_pending", **pending_event(blog))
    return blog_response(blog, 201)


async def get_blog(request: Request) -> Response:
    """Show one blog: approved ones to everyone, the others to their author and reviewers."""
    user, key = await authenticate(request), f"blog {request.path_params['blog_id']}"
    if not (response := public_cache.response(key)):
        version = public_cache.version
        blog = await get_visible_blog(request.path_params["blog_id"], user)
        response = blog_response(blog)
        if blog["status"] == "approved":
            public_cache.keep(key, response, version)  # with its ETag, made from the same row as its body
    return unless_unchanged(request, response)


@verified_required
async def update_blog(request: Request) -> Response:
    """Rewrite your blog while it is not approved; a rejected blog goes back to pending."""
    user, fields = request.state.user, await read_body(request, BLOG_BODY)
    async with publishing():
        # Locked from this read to the commit: no review lands in between (an edit after a rejection is a
        # resubmission reviewers hear), and of two edits sent with one If-Match the second is refused.
        blog = await get_visible_blog(request.path_params["blog_id"], user, locking=True)
        if blog["author_id"] != user["id"]:
            raise HTTPException(403, "Only its author may edit a blog.")
        if blog["status"] == "approved":
            raise HTTPException(409, "An approved blog cannot be edited.")
        check_if_match(request, blog_etag(blog), BLOG_CHANGED)
        action = "blog_resubmitted" if blog["status"] == "rejected" else "blog_edited"
        await database.execute(
            "UPDATE blogs SET title = :title, content = :content, images = :images, search_words = :search_words, "
            "status = 'pending', reject_reason = NULL, updated_at = :now, version = version + 1 WHERE id = :id",
            blog_values(fields) | {"now": utc_now(), "id": blog["id"]})
        blog = await database.fetch_one(BLOG_BY_ID, {"id": blog["id"]})
        await record(action, user, blog_id=blog["id"], detail={"title": blog["title"]})
        await publish("blog_pending", **pending_event(blog))  # reviewers see what they would approve now
    return blog_response(blog)


@verified_required
async def delete_blog(request: Request) -> Response:
    """Delete a blog: your own, or any blog if you are an admin."""
    user = request.state.user
    async with publishing():
        blog = await get_visible_blog(request.path_params["blog_id"], user)
        if blog["author_id"] != user["id"] and user["role"] != "admin":
            raise HTTPException(403, "Only its author or an admin may delete a blog.")
        # What the DELETE removed says whether the public pages changed, not the read before it.
        deleted = await database.fetch_one("DELETE FROM blogs WHERE id = :id RETURNING status", {"id": blog["id"]})
        if deleted is None:
            raise HTTPException(404, f"There is no blog {blog['id']}.")
        await record("blog_deleted", user, blog_id=blog["id"], target=blog["author"],
                     detail={"title": blog["title"], "status": deleted["status"]})
        await publish("blog_deleted", blog_id=blog["id"])
        if deleted["status"] == "approved":
            await public_pages_changed()
    return Response(status_code=204)


async def review_blog(request: Request, status: str, reason: str | None) -> Response:
    """Move a pending blog to `status`; a reviewer may not review their own blog."""
    async with publishing():
        # Locked from this read to the commit: of two reviewers racing, the second reads the first's decision.
        blog = await get_visible_blog(request.path_params["blog_id"], request.state.user, locking=True)
        if blog["author_id"] == request.state.user["id"]:
            raise HTTPException(403, "You cannot review your own blog; another reviewer must.")
        if blog["status"] != "pending":
            raise HTTPException(409, f"This blog is already {blog['status']}; only pending blogs can be reviewed.")
        check_if_match(request, blog_etag(blog), BLOG_CHANGED)  # the review is of the version the reviewer read
        await database.execute(
            "UPDATE blogs SET status = :status, reject_reason = :reason, updated_at = :now, version = version + 1 "
            "WHERE id = :id", {"status": status, "reason": reason, "now": utc_now(), "id": blog["id"]})
        await record("blog_" + status, request.state.user, blog_id=blog["id"], target=blog["author"],
                     detail={"reason": reason} if status == "rejected" else {})
        await publish("blog_reviewed", blog_id=blog["id"], title=blog["title"], status=status, reason=reason,
                      user_id=blog["author_id"])
        if status == "approved":
            await public_pages_changed()
        blog = await database.fetch_one(BLOG_BY_ID, {"id": blog["id"]})
    return blog_response(blog)


@requires_role("approver", "admin", verified=True)
async def approve_blog(request: Request) -> Response:
    """Approve a pending blog: it becomes public."""
    return await review_blog(request, "approved", None)


@requires_role("approver", "admin", verified=True)
async def reject_blog(request: Request) -> Response:
    """Reject a pending blog, optionally with a reason for its author."""
    return await review_blog(request, "rejected", (await read_body(request, REJECT_BODY)).get("reason"))


async def blog_history(request: Request) -> Response:
    """Show a blog's record, oldest first, to its author and reviewers; a deleted blog's to admins."""
    blog_id, user = request.path_params["blog_id"], await authenticate(request)
    blog = await database.fetch_one("SELECT author_id FROM blogs WHERE id = :id", {"id": blog_id})
    rows = await database.fetch_all(RECORD_SELECT + " WHERE blog_id = :id ORDER BY id", {"id": blog_id})
    # Readers of a public blog are not shown how it was reviewed: to them there is no record.
    # A deleted blog's record is the admins' alone, as is the rest of GET /api/audit.
    if blog is None:
        allowed = bool(rows) and user is not None and user["role"] == "admin"
    else:
        allowed = user is not None and (user["role"] in ("approver", "admin") or user["id"] == blog["author_id"])
    if not allowed:
        raise HTTPException(404, f"There is no blog {blog_id}.")
    return JSONResponse({"items": [record_out(row) for row in rows]})


#### Likes and the feed


async def check_approved(blog_id: int) -> int:
    """The blog's id; 404 unless it is approved: only those can be liked, and only their likes are shown."""
    if await database.fetch_one("SELECT 1 FROM blogs WHERE id = :id AND status = 'approved'", {"id": blog_id}) is None:
        raise HTTPException(404, f"There is no approved blog {blog_id}.")
    return blog_id


@verified_required
async def like_blog(request: Request) -> Response:
    """Like an approved blog; liking twice is liking once. The count shows within a second."""
    blog_id = await check_approved(request.path_params["blog_id"])
    # WHERE EXISTS: a blog deleted since the check takes no like (at that very instant: a 404, deleted_meanwhile).
    await database.execute(
        "INSERT INTO likes (user_id, blog_id, created_at) SELECT :user_id, :blog_id, :now WHERE EXISTS "
        "(SELECT 1 FROM blogs WHERE id = :blog_id AND status = 'approved') AND EXISTS "
        "(SELECT 1 FROM users WHERE id = :user_id) ON CONFLICT DO NOTHING",
        {"user_id": request.state.user["id"], "blog_id": blog_id, "now": utc_now()})
    return Response(status_code=204)


@verified_required
async def unlike_blog(request: Request) -> Response:
    """Take your like back; it is no error if you had none."""
    blog_id = await check_approved(request.path_params["blog_id"])
    await database.execute("DELETE FROM likes WHERE user_id = :user_id AND blog_id = :blog_id",
                           {"user_id": request.state.user["id"], "blog_id": blog_id})
    return Response(status_code=204)


async def list_likes(request: Request) -> Response:
    """List the profiles of those who liked an approved blog, newest accounts first."""
    await check_approved(request.path_params["blog_id"])
    return await profile_page(request, PROFILE_SELECT + " JOIN likes l ON l.user_id = u.id WHERE l.blog_id = :id",
                              {"id": request.path_params["blog_id"]})


# Two ways to a feed page, each slow where the other is fast (`python bench.py reads --posts 1000000` times both):
# - walk every post newest first until the page is full of followed ones: quick for a reader of many authors;
# - take a page at most of each followed author's newest posts below the cursor (blogs_author_status_id, see
#   database.EACH_AUTHOR), then the newest: quick for a few. (Sorting all theirs: 27 ms at 1M posts, 1 s unanalyzed.)
FEED_WALKS_FROM = 50  # followed authors from which the walk is the faster way
FEED_GATHERED = ("(SELECT followed_id AS author_id FROM follows WHERE follower_id = :me UNION ALL SELECT :me) AS a"
                 " CROSS JOIN {each_author} JOIN users u ON u.id = b.author_id WHERE TRUE")
FEED_EACH_AUTHOR = ("SELECT id FROM blogs{by_author} WHERE author_id = a.author_id AND status = 'approved' "
                    "AND id < :before ORDER BY id DESC LIMIT :limit")
FEED_WALKED = ("(b.author_id = :me OR EXISTS (SELECT 1 FROM follows f WHERE f.follower_id = :me "
               "AND f.followed_id = b.author_id))")


@login_required
async def feed(request: Request) -> Response:
    """List the approved blogs of the authors you follow, and your own, newest first."""
    (limit, before), me = page_params(request), request.state.user["id"]
    follows = await database.fetch_val("SELECT COUNT(*) FROM follows WHERE follower_id = :me", {"me": me})
    if follows >= FEED_WALKS_FROM:
        source = BLOG_SELECT + " WHERE " + FEED_WALKED
    else:
        each_author = database.EACH_AUTHOR.format(FEED_EACH_AUTHOR.format(by_author=database.BY_AUTHOR))
        source = BLOG_COLUMNS + " FROM " + FEED_GATHERED.format(each_author=each_author)
    rows = await database.fetch_all(source + " AND b.status = 'approved' AND b.id < :before ORDER BY b.id DESC "
                                    "LIMIT :limit", {"me": me, "before": before, "limit": limit + 1})
    return JSONResponse(page_of(rows, limit, blog_out))


#### Comments and chat: the history over REST, the live room over a WebSocket


CHAT_MESSAGE_BODY = {"type": "object", "required": ["text"], "examples": [{"text": "Nice post!"}], "properties": {
    "text": {"type": "string", "minLength": 1, "maxLength": 2000},
}}

rooms: dict[int, set[asyncio.Queue]] = {}  # blog id -> the outbox of each socket in that blog's chat room


async def list_comments(request: Request) -> Response:
    """List a blog's comments (its chat history), newest first."""
    blog = await get_visible_blog(request.path_params["blog_id"], await authenticate(request))
    limit, before = page_params(request)
    rows = await database.fetch_all(
        "SELECT c.id, c.blog_id, c.author_id, u.username AS author, c.text, c.created_at "
        "FROM comments c JOIN users u ON u.id = c.author_id WHERE c.blog_id = :blog_id AND c.id < :before "
        "ORDER BY c.id DESC LIMIT :limit", {"blog_id": blog["id"], "before": before, "limit": limit + 1})
    return JSONResponse(page_of(rows, limit, dict))


@verified_required
async def delete_comment(request: Request) -> Response:
    """Delete a comment: your own, or any if you are an admin; it leaves the history and the room."""
    user = request.state.user
    async with publishing():
        comment = await database.fetch_one("SELECT id, blog_id, author_id FROM comments WHERE id = :id"
                                           + database.LOCKING, {"id": request.path_params["comment_id"]})
        blog = comment and await database.fetch_one(BLOG_BY_ID, {"id": comment["blog_id"]})
        if blog is None or not may_see(blog, user):  # under a hidden blog: the very answer of an absent id
            raise HTTPException(404, f"There is no comment {request.path_params['comment_id']}.")
        if comment["author_id"] != user["id"] and user["role"] != "admin":
            raise HTTPException(403, "Only its author or an admin may delete a comment.")
        await database.execute("DELETE FROM comments WHERE id = :id", {"id": comment["id"]})
        if comment["author_id"] != user["id"]:  # moderation: an admin deleted someone else's words
            author = await database.fetch_val("SELECT username FROM users WHERE id = :id", {"id": comment["author_id"]})
            await record("comment_deleted", user, blog_id=comment["blog_id"], target=author,
                         detail={"comment_id": comment["id"]})
        await publish("comment_deleted", id=comment["id"], blog_id=comment["blog_id"])
    return Response(status_code=204)


def origin_allowed(websocket: WebSocket) -> bool:
    """Browsers always send Origin; only our CORS origins and our own host may open a socket."""
    origin = websocket.headers.get("origin")
    try:
        netloc = urlsplit(origin).netloc if origin else None
    except ValueError:  # not a URL at all ("http://[")
        return False
    return origin is None or origin in CORS_ORIGINS or netloc == websocket.headers.get("host")


async def chat(websocket: WebSocket) -> None:
    """Chat under a blog: each message is stored as a comment and sent to everyone in the room.
    Client sends {"text": "Nice post!"}; the room receives {"type": "message", "id": 7, "blog_id": 5,
    "author_id": 2, "author": "alice", "text": "Nice post!", "created_at": "..."}."""
    if not origin_allowed(websocket):
        await websocket.close(code=1008)  # before accept: the handshake itself is refused (403)
        return
    outbox = asyncio.Queue(maxsize=LISTENER_QUEUE_SIZE)
    try:
        user = await authenticate(websocket, for_stream=True)
        if user is None:
            raise unauthorized("Connect with ?ticket=<a stream ticket> or ?token=<your access token>.")
        blog = await get_visible_blog(websocket.path_params["blog_id"], user)
        count_connection(user, outbox)
    except (HTTPException, DatabaseUnavailable) as refusal:
        closing = DATABASE_DOWN if isinstance(refusal, DatabaseUnavailable) else Closing(refusal.detail)
        await websocket.accept()  # then close: a browser only sees the code and reason after a handshake
        await websocket.close(code=closing.code, reason=closing.reason)
        return
    try:
        async with join_room(blog["id"], user, websocket, outbox):
            while (message := await websocket.receive())["type"] == "websocket.receive":
                await post_chat_message(message.get("text"), blog["id"], user, outbox)
    finally:
        forget_connection(user, outbox)


async def post_chat_message(text: str | None, blog_id: int, user: dict, outbox: asyncio.Queue) -> None:
    """Store a chat message and publish it to the room; an invalid one gets an error, to its sender only."""
    try:
        check_verified(user)  # as on REST: with REQUIRE_VERIFIED_EMAIL on, an unverified account only reads
        fields = validate(parse_json(text or ""), CHAT_MESSAGE_BODY)  # a binary frame has no text
    except HTTPException as refusal:
        offer(outbox, {"type": "error", "detail": refusal.detail})
        return
    try:
        await store_chat_message(fields["text"], blog_id, user, outbox)
    except DatabaseUnavailable:  # the socket stays open: the sender may send it again
        offer(outbox, {"type": "error", "detail": "The database is unavailable for a moment; your message was "
                                                  "not stored. Please send it again shortly."})


async def store_chat_message(text: str, blog_id: int, user: dict, outbox: asyncio.Queue) -> None:
    """Store a chat message under the flood limit, and publish it."""
    now = datetime.now(UTC)
    async with publishing():
        # The flood limit counts the user's messages from every socket and every process. It
        # cannot race: publishing transactions take turns, from before this count to the commit.
        recent = await database.fetch_val(
            "SELECT COUNT(*) FROM comments WHERE author_id = :author_id AND created_at > :since",
            {"author_id": user["id"], "since": utc_time(now - timedelta(seconds=10))})
        if recent >= CHAT_MESSAGES_PER_10S:
            end(outbox, Closing("Too many messages; slow down."))
            return
        # INSERT ... SELECT ... WHERE EXISTS: a blog or an account deleted while the room was open
        # stores nothing (its socket is about to be closed by the deletion's event).
        comment = await database.fetch_one(
            "INSERT INTO comments (blog_id, author_id, text, created_at) SELECT :blog_id, :author_id, :text, :now "
            "WHERE EXISTS (SELECT 1 FROM blogs WHERE id = :blog_id) "
            "AND EXISTS (SELECT 1 FROM users WHERE id = :author_id) RETURNING id, blog_id, author_id, text, created_at",
            {"blog_id": blog_id, "author_id": user["id"], "text": text, "now": utc_time(now)})
        if comment is None:
            offer(outbox, {"type": "error", "detail": "This blog or your account has been deleted."})
            return
        await publish("chat_message", **comment, author=user["username"])


@asynccontextmanager
async def join_room(blog_id: int, user: dict, websocket: WebSocket, outbox: asyncio.Queue) -> AsyncIterator[None]:
    """Accept a socket into a blog's chat room while the block runs, `outbox` being what it is sent.
    It joins before the handshake completes, so an open socket misses nothing; a task of its own sends
    the outbox, so no member waits on another's socket; the token's expiry closes the socket."""
    rooms.setdefault(blog_id, set()).add(outbox)
    expiry = asyncio.get_running_loop().call_later(
        user["credential_expires"] - time.time(), end, outbox, TOKEN_EXPIRED)
    sender = None
    try:
        await websocket.accept()
        sender = asyncio.create_task(send_outbox(websocket, outbox))
        yield
    finally:
        expiry.cancel()
        if sender:
            sender.cancel()
        room = rooms.get(blog_id, set())
        room.discard(outbox)
        if not room:
            rooms.pop(blog_id, None)


async def send_outbox(websocket: WebSocket, outbox: asyncio.Queue) -> None:
    """Send a member's messages in order; close its socket when told to end (1013: it fell behind)."""
    try:
        while not isinstance(message := await outbox.get(), Closing):
            await websocket.send_json(message)
        await websocket.close(code=message.code, reason=message.reason)
    except (WebSocketDisconnect, RuntimeError):  # the socket closed first: nobody is left to tell
        pass


def room_broadcast(blog_id: int, message: dict) -> None:
    """Queue a message for everyone in a blog's chat room."""
    for outbox in rooms.get(blog_id, set()):
        offer(outbox, message)


@on_event("chat_message")
def send_chat_message(event: dict) -> None:
    """A message stored as a comment goes to everyone in its room."""
    room_broadcast(event["data"]["blog_id"], {"type": "message", **event["data"]})


@on_event("comment_deleted")
def send_comment_deleted(event: dict) -> None:
    """A deleted comment leaves every screen of its room: {"type": "deleted", "id": 7}."""
    room_broadcast(event["data"]["blog_id"], {"type": "deleted", "id": event["data"]["id"]})


@on_event("blog_deleted")
def close_room_of_deleted_blog(event: dict) -> None:
    """Nobody chats under a blog that is gone."""
    for outbox in rooms.get(event["data"]["blog_id"], set()):
        end(outbox, Closing("This blog has been deleted."))


#### Notifications: Server-Sent Events, for reviewers and for authors


streams: dict[asyncio.Queue, dict] = {}  # the queue of each open event stream -> the user it streams to

# Which events an event stream tells its user of: reviewers hear of the blogs waiting for review;
# everyone hears how their own blogs were reviewed and how their own writing jobs ended.
STREAM_EVENTS = ("blog_pending", "blog_reviewed", "job_finished")


@on_event(*STREAM_EVENTS)
def send_to_event_streams(event: dict) -> None:
    """Queue an event for every stream whose user hears of it, as one frame made once for all."""
    frame = None
    for queue, user in streams.items():
        if hears(user, event):
            frame = frame or sse_frame(event)
            offer(queue, (event["id"], frame))


def hears(user: dict, event: dict) -> bool:
    """Whether an event stream's user is told of an event (see STREAM_EVENTS)."""
    if event["type"] == "blog_pending":
        return user["role"] in ("approver", "admin")
    return event["type"] in STREAM_EVENTS and event["data"].get("user_id") == user["id"]


@contextmanager
def subscribe(user: dict, queue: asyncio.Queue) -> Iterator[None]:
    """Receive the events that `user` hears of while the block runs, however it ends."""
    streams[queue] = user
    log.info("Notification stream opened (%d open)", len(streams))
    try:
        yield
    finally:
        del streams[queue]
        log.info("Notification stream closed (%d open)", len(streams))


def sse_frame(event: dict) -> str:
    """One event on the wire, ended by a blank line; its id is the event log's:

        id: 17
        event: blog_pending
        data: {"type": "blog_pending", "blog_id": 5, "title": "New Blog", "author_id": 2, "etag": "\"1.0\""}
    """
    data = json.dumps({"type": event["type"], **event["data"]})
    return f"id: {event['id']}\nevent: {event['type']}\ndata: {data}\n\n"


async def missed_events(user: dict, last_event_id: int) -> tuple[list[dict], int]:
    """The events a client that saw `last_event_id` missed, and the newest id of the log. A client
    further back than the log reaches (older events are pruned), or ahead of it (a log made anew),
    gets what the log cannot tell it: the blogs pending now, if it reviews them."""
    span = await database.fetch_one("SELECT MIN(id) AS oldest, MAX(id) AS newest FROM events")
    newest = span["newest"] or 0  # no event yet: whatever the client saw was in a log made anew
    if span["newest"] is None or not span["oldest"] - 1 <= last_event_id <= newest:
        if not hears(user, {"type": "blog_pending"}):
            return [], newest
        rows = await database.fetch_all(BLOG_SELECT + " WHERE b.status = 'pending' ORDER BY b.id")
        return [{"id": newest, "type": "blog_pending", "data": pending_event(row)} for row in rows], newest
    rows = await database.fetch_all(
        "SELECT id, kind, data FROM events WHERE id > :after AND id <= :newest AND kind IN "  # STREAM_EVENTS:
        "('blog_pending', 'blog_reviewed', 'job_finished') ORDER BY id",  # the log holds chat messages too
        {"after": last_event_id, "newest": newest})
    return [event for event in map(event_of, rows) if hears(user, event)], newest


async def event_stream(user: dict, queue: asyncio.Queue, last_event_id: int | None) -> AsyncIterator[str]:
    """The stream: what a reconnecting client missed, then live events and pings, until the token or the rights end."""
    with subscribe(user, queue):  # before the replay, so that nothing published meanwhile is lost
        yield ": connected\n\n"
        try:
            missed, seen = await missed_events(user, last_event_id) if last_event_id is not None else ([], 0)
        except DatabaseUnavailable:  # EventSource reconnects by itself, with the same Last-Event-ID
            yield f": {DATABASE_DOWN.reason}\n\n"
            return
        for event in missed:
            yield sse_frame(event)
        while (wait := min(SSE_PING_SECONDS, user["credential_expires"] - time.time())) > 0:
            try:
                async with asyncio.timeout(wait):  # not wait_for, which can swallow a cancellation (see run_event_bus)
                    item = await queue.get()
            except TimeoutError:
                yield ": ping\n\n"  # keeps proxies and browsers from closing a quiet connection
                continue
            if isinstance(item, Closing):
                yield f": {item.reason}\n\n"  # EventSource reconnects with Last-Event-ID and misses nothing
                return
            event_id, frame = item
            if event_id > seen:  # the replay may have sent it already
                yield frame
        yield f": {TOKEN_EXPIRED.reason}\n\n"


class EventStreamResponse(StreamingResponse):
    """An event stream that counts as one of its user's connections until it ends, however it ends."""

    def __init__(self, user: dict, last_event_id: int | None):
        self.user, self.queue = user, asyncio.Queue(maxsize=LISTENER_QUEUE_SIZE)
        count_connection(user, self.queue)
        super().__init__(event_stream(user, self.queue, last_event_id), media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            forget_connection(self.user, self.queue)


@requires_role(*ROLES, for_stream=True)
async def notifications(request: Request) -> Response:
    """Stream what concerns you: blogs waiting for review (reviewers), your reviews and your jobs."""
    # EventSource sends Last-Event-ID when it reconnects by itself; a page that opens a new one
    # (with a new ticket) passes ?last_event_id=. Any bytes may come: one not an id of ours is none.
    last_id = request.headers.get("last-event-id") or request.query_params.get("last_event_id", "")
    return EventStreamResponse(request.state.user, int(last_id) if re.fullmatch(r"[0-9]{1,9}", last_id) else None)


#### Appendix A. Accounts by mail: password reset, verified addresses, address change
#
# A mailed link's token traded for a new password or a verified address, the mails' texts, and an address
# change (mailed to both addresses).


# Links in mails carry itsdangerous tokens, each salted for its one purpose and time-stamped,
# and each holding the account's security_stamp as it was when the link was made:
#   reset:  {"sub": 42, "stamp": 3}
#   verify: {"sub": 42, "stamp": 3, "email": "new@example.com", "sid": "q3J..."}  (the address to verify,
#           the account's own or a new one it asked for; "sid": the session that asked, or "")
#   undo:   {"sub": 42, "stamp": 3, "email": "old@example.com"}  ("this wasn't me", see secure_account)
# A password or address change moves the stamp one up: every earlier link dies at once, a reset
# link works once (it changes the password), and changing an address back revives no link.
reset_tokens = URLSafeTimedSerializer(SECRET_KEY, salt="password-reset")
verify_tokens = URLSafeTimedSerializer(SECRET_KEY, salt="verify-email")
undo_tokens = URLSafeTimedSerializer(SECRET_KEY, salt="secure-account")


def read_link(serializer: URLSafeTimedSerializer, token: str, max_age: float, what: str, *strings: str) -> dict:
    """A mailed link's claims, each of `strings` present; 400 if expired, forged or odd (as in claims_in_shape)."""
    try:
        claims = serializer.loads(token, max_age=max_age)
    except SignatureExpired:
        raise HTTPException(400, f"This {what} link has expired; ask for a new one.")
    except BadSignature:
        claims = None
    if not (isinstance(claims, dict) and all(name in claims for name in strings)
            and all(type(claims.get(name)) is int and 0 <= claims[name] < 10**9 for name in ("sub", "stamp"))
            and all(isinstance(claims.get(name, ""), str) for name in ("email", "sid"))):
        raise HTTPException(400, "This link is not valid; ask for a new one.")
    return claims


async def within_limit(key: str, allowed: int, window_seconds: float) -> bool:
    """Count one against `key` as count_guess does; whether it is still within `allowed`, never a 429."""
    with suppress(HTTPException):
        await count_guess(key, allowed, window_seconds)
        return True
    return False


EMAIL_BODY = {"type": "object", "required": ["email"], "examples": [{"email": "alice@example.com"}],
              "properties": {"email": REGISTER_BODY["properties"]["email"]}}
RESET_BODY = {"type": "object", "required": ["token", "password"],
              "examples": [{"token": "eyJzdWIiOjQyLCJwdyI6IjlmOGUifQ.Z3x...", "password": "battery staple"}],
              "properties": {
    "token": {"type": "string", "maxLength": 1000, "description": "what follows token= in the mailed link"},
    "password": REGISTER_BODY["properties"]["password"],
}}
TOKEN_BODY = {"type": "object", "required": ["token"], "examples": [{"token": "eyJzdWIiOjQyLCJlbWFpbCI6ImFs..."}],
              "properties": {"token": RESET_BODY["properties"]["token"]}}


# The token goes after "#", in the fragment, which browsers never send to a server: it stays out of access
# logs (ours, Caddy's, a proxy's) and of the Referer header the next page would get; the page at / posts it.
def mailed_link(page: str, tokens: URLSafeTimedSerializer, user: dict, **claims: str) -> str:
    """A link to the page at / with a token of the user's id, stamp and claims: PUBLIC_URL + "/#verify?token=..."."""
    return PUBLIC_URL + f"/#{page}?token=" + tokens.dumps({"sub": user["id"], "stamp": user["security_stamp"]} | claims)


def verification_mail(user: dict, email: str | None = None, session_id: str = "") -> tuple[str, str, str, str]:
    """The mail asking to confirm the user's address, or a new one a session asked for: (kind, to, subject, body)."""
    email = email or user["email"]
    link = mailed_link("verify", verify_tokens, user, email=email, sid=session_id)
    return ("verify", email, "Confirm your email address",
            f"Hello {user['username']},\n\nplease confirm that this address is yours by opening this link within "
            f"{VERIFY_TOKEN_HOURS} hours:\n\n{link}\n\nIf you did not ask for it, ignore this mail.\n")


def reset_mail(user: dict) -> tuple[str, str, str, str]:
    """The mail with a link to choose a new password: (kind, to, subject, body)."""
    link = mailed_link("reset-password", reset_tokens, user)
    return ("reset", user["email"], "Reset your password",
            f"Hello {user['username']},\n\nsomeone, we hope you, asked to reset your password. Open this link within "
            f"{RESET_TOKEN_MINUTES} minutes to choose a new one; it works once:\n\n{link}"
            "\n\nIf it was not you, ignore this mail: your password stays as it is.\n")


def notice_mail(user: dict, what: str, undo: bool = False) -> tuple[str, str, str, str]:
    """A mail telling a user at their address that `what` happened; undo=True adds a "this wasn't me" link."""
    advice = (f"If it was not you, open this link within {SECURE_LINK_DAYS} days: it keeps this address (or sets it "
              "back), ends every login, and lets you choose a new password:\n\n"
              f"{mailed_link('secure-account', undo_tokens, user, email=user['email'])}\n" if undo else
              "If it was not you, reset your password at once (\"Forgot your password?\"), and tell an admin.\n")
    return ("undo" if undo else "notice", user["email"], "Your account has changed",  # "undo" goes out with the links
            f"Hello {user['username']},\n\n{what}\n\n{advice}")


USER_BY_EMAIL = "SELECT id, username, email, email_verified, security_stamp FROM users WHERE email = :email"


async def mail_a_link(request: Request, kind: str, make_mail) -> Response:
    """Answer 202, then mail make_mail(user) to the body's address if it has an account: the same answer and writes
    either way (a database out of reach: a 503 for all), the rest after the answer, so its time tells nothing (OWASP
    Forgot Password Cheat Sheet). Asks count per address and client, so others' asks spend none of the owner's; the
    address's cap, MAILS_PER_HOUR, is higher, but many clients can reach it (a known limit, in the README)."""
    email, address = (await read_body(request, EMAIL_BODY))["email"].lower(), client_address(request)
    allowed = (await within_limit(f"{kind}-ask:{email}:{address}", LINK_ASKS_PER_HOUR, 3600)
               and await within_limit("address:" + address, LOGIN_FAILURES_PER_ADDRESS, LOGIN_WINDOW_SECONDS))
    return JSONResponse({"detail": "If this address has an account, a mail with a link is on its way to it."}, 202,
                        background=BackgroundTask(queue_link_mail, kind, email, make_mail) if allowed else None)


async def queue_link_mail(kind: str, email: str, make_mail) -> None:
    """Queue make_mail(user) for the account of `email`, counting a mail to the address either way."""
    for pause in (0.5, 2, 8):  # a database out of reach for a moment is tried again
        try:
            async with publishing():
                user = await database.fetch_one(USER_BY_EMAIL, {"email": email})
                if user and (mail := make_mail(user)):
                    await queue_mail(*mail)
                else:  # the same count without an account (or a mail), so the same writes either way
                    await within_limit(f"mail:{kind}:{email}", MAILS_PER_HOUR[kind], 3600)
            return
        except DATABASE_ERRORS as error:
            log.warning("Mail: a %s link asked for waits %.1f s for the database (%s)", kind, pause, error)
            await asyncio.sleep(pause)
    log.error("Mail: a %s link asked for was given up; the database stayed out of reach", kind)


async def forgot_password(request: Request) -> Response:
    """Mail a link to choose a new password, if the address has an account; the answer never says."""
    return await mail_a_link(request, "reset", reset_mail)


async def reset_password(request: Request) -> Response:
    """Set a new password with the token of a reset mail; every session of the account ends."""
    fields = await read_body(request, RESET_BODY)
    claims = read_link(reset_tokens, fields["token"], RESET_TOKEN_MINUTES * 60, "password reset")
    stamp = {"id": claims["sub"], "stamp": claims["stamp"]}
    used = HTTPException(400, "This password reset link has been used, or the account has changed since; "
                              "ask for a new one.")
    if not await database.fetch_one("SELECT 1 FROM users WHERE id = :id AND security_stamp = :stamp", stamp):
        raise used  # before bcrypt: a dead link costs no hash
    password_hash = await hash_new_password(fields["password"])
    async with publishing():
        # One conditional statement, with the stamp the link was made with, which it moves: of two uses of one
        # link, even at the same instant, the second changes nothing; nor does a use racing an address change.
        user = await database.fetch_one(
            "UPDATE users SET password_hash = :hash, security_stamp = security_stamp + 1 WHERE id = :id "
            "AND security_stamp = :stamp RETURNING id, username, email", stamp | {"hash": password_hash})
        if user is None:
            raise used
        await end_every_session(user, "Your password was changed, with a reset link mailed to this address. "
                                      "Every login of yours has ended.")
    return Response(status_code=204)


async def end_every_session(user: dict, what: str) -> None:
    """In a publishing transaction, once a link set a password: log everyone out, forget failed logins, tell `what`."""
    await database.execute("UPDATE sessions SET ended_at = :now WHERE user_id = :id AND ended_at IS NULL",
                           {"now": utc_now(), "id": user["id"]})
    await database.execute("DELETE FROM guesses WHERE key IN (:account, :name, :email)",
                           {"account": f"account:{user['id']}", "name": "login:" + user["username"].lower(),
                            "email": "login:" + user["email"]})
    await publish("user_changed", user_id=user["id"])  # its access tokens, streams and sockets end too
    await queue_mail(*notice_mail(user, what))


async def secure_account(request: Request) -> Response:
    """Undo an address change you did not ask for ("this wasn't me"): address back, new password, no session left."""
    fields = await read_body(request, RESET_BODY)
    claims = read_link(undo_tokens, fields["token"], SECURE_LINK_DAYS * 86400, "account", "email")
    password_hash = await hash_new_password(fields["password"])
    async with publishing():
        # One conditional statement, whatever changed since the link was made (the thief may have moved the account,
        # changed its password, even used an undo link of their own address). It needs a link older than the last one
        # used, or newer than that undo (the earliest address wins; each link works once), and the address still free.
        user = await database.fetch_one(
            "UPDATE users SET email = :email, email_verified = 1, password_hash = :hash, security_stamp = "
            "security_stamp + 1, undone_with = :stamp, undone_at = security_stamp + 1 WHERE id = :id AND "
            "(:stamp < undone_with OR :stamp >= undone_at) AND NOT EXISTS (SELECT 1 FROM users WHERE email = :email "
            "AND id <> :id) RETURNING id, username, email",
            {"email": claims["email"], "hash": password_hash, "id": claims["sub"], "stamp": claims["stamp"]})
        if user is None:
            raise HTTPException(400, "This link has been used, or an older one since; ask an admin for help.")
        await end_every_session(user, "Your account is back at this address, with a new password chosen through a "
                                      "link mailed here. Every login of yours has ended.")
    return Response(status_code=204)


async def request_verify_token(request: Request) -> Response:
    """Mail a new verification link to an account's unverified address; the answer never says if one was sent."""
    return await mail_a_link(request, "verify", lambda user: not user["email_verified"] and verification_mail(user))


async def verify_email(request: Request) -> Response:
    """Verify your address, or move to the new one you asked for, with the link mailed to it."""
    token = (await read_body(request, TOKEN_BODY))["token"]
    claims = read_link(verify_tokens, token, VERIFY_TOKEN_HOURS * 3600, "verification", "email", "sid")
    async with publishing():  # publishing transactions take turns: nothing changes between these statements
        before = await database.fetch_val("SELECT email FROM users WHERE id = :id", {"id": claims["sub"]})
        # One conditional statement: the link's stamp, an address not yet verified, nobody else's (ADDRESS_TAKEN). A
        # move takes the stamp one up (every earlier link dies) and holds the old address while its undo link works.
        moving, held_until = before != claims["email"], utc_time(datetime.now(UTC) + timedelta(days=SECURE_LINK_DAYS))
        user = await database.fetch_one(
            "UPDATE users SET email = :email, email_verified = 1, security_stamp = security_stamp + :moves, "
            "moved_from = COALESCE(:left, moved_from), moved_until = COALESCE(:until, moved_until) WHERE id = :id "
            "AND security_stamp = :stamp AND (email <> :email OR email_verified = 0) "
            "AND NOT EXISTS (SELECT 1 FROM users WHERE " + ADDRESS_TAKEN + " AND id <> :id) RETURNING " + USER_COLUMNS,
            {"email": claims["email"], "moves": int(moving), "id": claims["sub"], "stamp": claims["stamp"],
             "now": utc_now(), "left": before if moving else None, "until": held_until if moving else None})
        if user is None:
            raise HTTPException(400, "This verification link has been used, or the account has changed since; "
                                     "ask for a new one.")
        if before != user["email"]:  # a move ends every session but the one that asked for it
            await database.execute("UPDATE sessions SET ended_at = :now WHERE user_id = :id AND id <> :sid AND "
                                   "ended_at IS NULL", {"now": utc_now(), "id": user["id"], "sid": claims["sid"]})
        await publish("user_changed", user_id=user["id"])  # open sockets reconnect, with the right to write
    return JSONResponse(user_out(user))


async def ask_for_address(user: dict, email: str) -> None:
    """In a publishing transaction: mail the new address a link that moves the account there, or, if another account
    has it, say so to it alone (the answer is the same); tell the old address, with a "this wasn't me" link."""
    if await database.fetch_one("SELECT 1 FROM users WHERE " + ADDRESS_TAKEN + " AND id <> :id",
                                {"email": email, "now": utc_now(), "id": user["id"]}):  # its own old one is free
        await queue_mail("verify", email, "This address already has an account", "Hello,\n\nsomeone asked to move "
                         "another account to this address, but it already has an account, so nothing changed. If it "
                         "was you, sign in with this address (\"Forgot your password?\" if need be).\n")
    else:
        await queue_mail(*verification_mail(user, email, user["session_id"]))
    await queue_mail(*notice_mail(user, "Someone, we hope you, asked to move your account to another address. It "
                                        "moves only once the link mailed there is opened.", undo=True))


#### Appendix B. For admins: roles, deleting accounts, the accounts list, the audit of decisions


ROLE_BODY = {"type": "object", "required": ["role"], "examples": [{"role": "approver"}], "properties": {
    "role": {"type": "string", "enum": list(ROLES)},
}}


async def user_leaving_a_role(username: str, role: str | None) -> dict:
    """In a transaction: the user, locked, about to take `role` (None: be deleted); never the last admin. The admins'
    rows are locked too: of two admins demoting each other at once, the second waits, then finds one admin left."""
    admins = await database.fetch_all("SELECT id FROM users WHERE role = 'admin' ORDER BY id" + database.LOCKING)
    user = await database.fetch_one(USER_BY_NAME + database.LOCKING, {"username": check_username(username)})
    if user is None:
        raise HTTPException(404, f"There is no user {username!r}.")
    if user["role"] == "admin" and role != "admin" and len(admins) == 1:
        raise HTTPException(409, "This is the last admin; make another admin first.")
    return user


async def set_role(admin: dict, username: str, role: str) -> dict:
    """Give a user a role; their open streams and sockets end, to reopen with the new role's rights."""
    async with publishing():
        user = await user_leaving_a_role(username, role)
        if user["role"] != role:  # the role they already have is no change, and leaves no record
            await database.execute("UPDATE users SET role = :role WHERE id = :id", {"role": role, "id": user["id"]})
            await record("role_changed", admin, target=user["username"], detail={"from": user["role"], "to": role})
            await publish("user_changed", user_id=user["id"])
    return user_out(user | {"role": role})


@requires_role("admin", verified=True)
async def make_admin(request: Request) -> Response:
    """Make a user an admin."""
    return JSONResponse(await set_role(request.state.user, request.path_params["username"], "admin"))


@requires_role("admin", verified=True)
async def change_role(request: Request) -> Response:
    """Give a user the role user, approver or admin."""
    fields = await read_body(request, ROLE_BODY)
    return JSONResponse(await set_role(request.state.user, request.path_params["username"], fields["role"]))


@requires_role("admin", verified=True)
async def delete_user(request: Request) -> Response:
    """Delete an account with everything that is theirs; their streams and sockets end at once."""
    async with publishing():
        user = await user_leaving_a_role(request.path_params["username"], None)
        had_public_blogs = await database.fetch_val(
            "SELECT COUNT(*) FROM blogs WHERE author_id = :id AND status = 'approved'", {"id": user["id"]})
        await database.execute("DELETE FROM users WHERE id = :id", {"id": user["id"]})  # the rest cascades
        await record("user_deleted", request.state.user, target=user["username"], detail={"role": user["role"]})
        await publish("user_changed", user_id=user["id"])
        if had_public_blogs:
            await public_pages_changed()
    return Response(status_code=204)


# ?q= is the start of a username or an email, in any case: "AL" finds alice and al@example.com.
# LIKE's own wildcards in it are escaped, so "a_" finds "a_b" and not "ab".
ACCOUNT_SEARCH = {"type": "string", "maxLength": 254, "description": "the start of a username or an email"}
ROLE_QUERY = ROLE_BODY["properties"]["role"]
ACCOUNTS_SELECT = """
    SELECT u.id, u.username, u.email, u.role, u.created_at, u.email_verified,
           (SELECT COUNT(*) FROM blogs WHERE author_id = u.id) AS blogs
    FROM users u
    WHERE (CAST(:prefix AS TEXT) IS NULL OR LOWER(u.username) LIKE :prefix ESCAPE '!'
           OR u.email LIKE :prefix ESCAPE '!')
      AND (CAST(:role AS TEXT) IS NULL OR u.role = :role) AND u.id < :before
    ORDER BY u.id DESC LIMIT :limit"""


@requires_role("admin")
async def list_users(request: Request) -> Response:
    """List accounts, newest first, with role, count of blogs and verified address; ?q= and ?role= narrow it."""
    limit, before = page_params(request)
    text, role = query_param(request, "q", ACCOUNT_SEARCH), query_param(request, "role", ROLE_QUERY)
    prefix = None if text is None else re.sub(r"([!%_])", r"!\1", text.lower()) + "%"
    rows = await database.fetch_all(ACCOUNTS_SELECT, {"prefix": prefix, "role": role, "before": before,
                                                      "limit": limit + 1})
    return JSONResponse(page_of(rows, limit, lambda row: user_out(row) | {"blogs": row["blogs"]}))


ACTOR_QUERY = {"type": "string", "maxLength": 32, "description": "the username of whoever decided"}
ACTION_QUERY = {"type": "string", "enum": list(RECORD_ACTIONS)}


@requires_role("admin")
async def list_audit(request: Request) -> Response:
    """List the record of decisions, newest first; ?actor= and ?action= narrow it."""
    limit, before = page_params(request)
    actor, action = query_param(request, "actor", ACTOR_QUERY), query_param(request, "action", ACTION_QUERY)
    rows = await database.fetch_all(
        RECORD_SELECT + " WHERE (CAST(:actor AS TEXT) IS NULL OR LOWER(actor) = LOWER(:actor)) "
        "AND (CAST(:action AS TEXT) IS NULL OR action = :action) AND id < :before ORDER BY id DESC LIMIT :limit",
        {"actor": actor, "action": action, "before": before, "limit": limit + 1})
    return JSONResponse(page_of(rows, limit, record_out))


#### Appendix C. More resources: feature requests, drafts, and the writing assistant's jobs


# Feature requests: users suggest, admins triage.
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
FEATURE_REQUEST_COLUMNS = "id, title, description, status, priority, author_id, created_at, updated_at"


@login_required
async def list_feature_requests(request: Request) -> Response:
    """List feature requests, newest first; ?status= keeps one status."""
    limit, before = page_params(request)
    status = query_param(request, "status", TRIAGE_BODY["properties"]["status"])
    rows = await database.fetch_all(
        "SELECT " + FEATURE_REQUEST_COLUMNS + " FROM feature_requests WHERE (CAST(:status AS TEXT) IS NULL "
        "OR status = :status) AND id < :before ORDER BY id DESC LIMIT :limit",
        {"status": status, "before": before, "limit": limit + 1})
    return JSONResponse(page_of(rows, limit, dict))


@verified_required
async def create_feature_request(request: Request) -> Response:
    """Suggest a feature; it starts as pending, with priority 3 unless you say otherwise."""
    fields = await read_body(request, FEATURE_REQUEST_BODY)
    row = await database.fetch_one(
        "INSERT INTO feature_requests (title, description, status, priority, author_id, created_at, updated_at) VALUES "
        "(:title, :description, 'pending', :priority, :author_id, :now, :now) RETURNING " + FEATURE_REQUEST_COLUMNS,
        {"title": fields["title"], "description": fields["description"], "priority": fields.get("priority", 3),
         "author_id": request.state.user["id"], "now": utc_now()})
    return JSONResponse(dict(row), 201)


@requires_role("admin", verified=True)
async def triage_feature_request(request: Request) -> Response:
    """Accept or decline a feature request, and optionally change its priority."""
    fields = await read_body(request, TRIAGE_BODY)
    async with publishing():  # for record(): the triage and its entry commit together
        row = await database.fetch_one(
            "UPDATE feature_requests SET status = :status, priority = COALESCE(:priority, priority), "
            "updated_at = :now WHERE id = :id RETURNING " + FEATURE_REQUEST_COLUMNS,
            {"status": fields["status"], "priority": fields.get("priority"), "now": utc_now(),
             "id": request.path_params["request_id"]})
        if row is None:
            raise HTTPException(404, f"There is no feature request {request.path_params['request_id']}.")
        author = await database.fetch_val("SELECT username FROM users WHERE id = :id", {"id": row["author_id"]})
        await record("feature_request_triaged", request.state.user, target=author,
                     detail={"feature_request_id": row["id"], "status": row["status"], "priority": row["priority"]})
    return JSONResponse(dict(row))


# Drafts: one saved draft per user.
DRAFT_BODY = {"type": "object", "examples": [{"title": "Half a thought", "content": "To be continued"}],
              "anyOf": [{"required": ["title"]}, {"required": ["content"]}, {"required": ["images"]}],
              "properties": {
    "title": {"type": "string", "maxLength": 200},
    "content": {"type": "string", "maxLength": 100_000},
    "images": URL_LIST,
}}


def draft_etag(row) -> str:
    """'"3.2026-11-21T20:17:24.123Z"': version and time, as a draft deleted and saved anew restarts at 1."""
    return f'"{row["version"]}.{row["updated_at"]}"'


def draft_response(row) -> Response:
    return JSONResponse({"title": row["title"], "content": row["content"], "images": json.loads(row["images"]),
                         "updated_at": row["updated_at"]}, headers={"ETag": draft_etag(row)})


DRAFT_OF_USER = "SELECT title, content, images, updated_at, version FROM drafts WHERE user_id = :user_id"
# A draft saved whole over the one before, a version on; the job runner fills drafts with it too.
SAVE_DRAFT = ("INSERT INTO drafts (user_id, title, content, images, updated_at) VALUES (:user_id, :title, :content, "
              ":images, :now) ON CONFLICT (user_id) DO UPDATE SET title = excluded.title, content = excluded.content, "
              "images = excluded.images, updated_at = excluded.updated_at, version = drafts.version + 1")
DRAFT_CHANGED = ("Your draft has changed since you read it (its ETag is now the one sent with this answer, if it "
                 "still exists): GET it again, carry your changes over, and save with the new ETag in If-Match.")


@login_required
async def get_draft(request: Request) -> Response:
    """Show your saved draft."""
    row = await database.fetch_one(DRAFT_OF_USER, {"user_id": request.state.user["id"]})
    if row is None:
        raise HTTPException(404, "You have no saved draft.")
    return unless_unchanged(request, draft_response(row))


@verified_required
async def save_draft(request: Request) -> Response:
    """Save your draft whole, replacing the one saved before; missing fields are saved empty."""
    fields, user_id = await read_body(request, DRAFT_BODY), request.state.user["id"]
    async with database.transaction():
        # Locked from this read to the commit: of two saves sent with one If-Match, the second waits, then is refused.
        current = await database.fetch_one(DRAFT_OF_USER + database.LOCKING, {"user_id": user_id})
        check_if_match(request, current and draft_etag(current), DRAFT_CHANGED)
        row = await database.fetch_one(
            SAVE_DRAFT + " RETURNING title, content, images, updated_at, version",
            {"user_id": user_id, "title": fields.get("title", ""), "content": fields.get("content", ""),
             "images": json.dumps(fields.get("images", [])), "now": utc_now()})
    return draft_response(row)


@verified_required
async def delete_draft(request: Request) -> Response:
    """Throw away your saved draft."""
    await database.execute("DELETE FROM drafts WHERE user_id = :user_id", {"user_id": request.state.user["id"]})
    return Response(status_code=204)


# The writing assistant. POST /api/session/draft/generate answers at once with a pending job. Each process's
# runner claims pending jobs, JOBS_AT_ONCE at a time, and asks the writer (an OpenAI-compatible endpoint) for
# the post: pending -> in_progress -> completed or failed, heard on the owner's event stream. A job whose
# heartbeat (every JOB_HEARTBEAT_SECONDS) missed three is failed by any process: none stays in progress.
JOB_COLUMNS = "id, kind, status, result, filled_draft, error, created_at, updated_at"
GENERATE_BODY = {"type": "object", "required": ["title"],
                 "examples": [{"title": "Why I like Starlette", "notes": "Small, async, readable."}],
                 "properties": {"title": TITLE, "notes": {"type": "string", "maxLength": 5000}}}


def job_out(row: dict) -> dict:
    """A job as its owner sees it: {"id": 3, "kind": "draft_generation", "status": "completed", ...}."""
    return row | {"filled_draft": bool(row["filled_draft"])}


@verified_required
async def generate_draft(request: Request) -> Response:
    """Have the writing assistant draft a post from a title and notes; answers at once with the job."""
    fields, now = await read_body(request, GENERATE_BODY), utc_now()  # a bad body is a 422 either way
    if not WRITER_URL:
        raise HTTPException(503, "No writer is set up: set WRITER_URL to an OpenAI-compatible endpoint (for "
                                 "Ollama, http://127.0.0.1:11434/v1), and WRITER_MODEL and WRITER_API_KEY as it needs.")
    async with publishing():
        if await database.fetch_val("SELECT COUNT(*) FROM jobs WHERE status = 'pending'") >= JOBS_WAITING_AT_MOST:
            raise HTTPException(503, "The writer has too much to do just now; try again in a few minutes.")
        # The partial unique index refuses a second unfinished job of one user: no row comes back.
        job = await database.fetch_one(
            "INSERT INTO jobs (user_id, kind, status, input, created_at, updated_at) VALUES (:user_id, "
            "'draft_generation', 'pending', :input, :now, :now) ON CONFLICT DO NOTHING RETURNING " + JOB_COLUMNS,
            {"user_id": request.state.user["id"], "input": json.dumps(fields), "now": now})
        if job is None:
            raise HTTPException(429, "You already have a writing job under way; wait for it to end.")
        await publish("job_queued", job_id=job["id"])
    return JSONResponse(job_out(job), 202)


@login_required
async def get_job(request: Request) -> Response:
    """Show one of your jobs: its status, and its result or error once it has ended."""
    job = await database.fetch_one("SELECT " + JOB_COLUMNS + " FROM jobs WHERE id = :id AND user_id = :user_id",
                                   {"id": request.path_params["job_id"], "user_id": request.state.user["id"]})
    if job is None:
        raise HTTPException(404, f"You have no job {request.path_params['job_id']}.")
    return JSONResponse(job_out(job))


@login_required
async def list_jobs(request: Request) -> Response:
    """List your jobs, newest first."""
    limit, before = page_params(request)
    rows = await database.fetch_all(
        "SELECT " + JOB_COLUMNS + " FROM jobs WHERE user_id = :user_id AND id < :before ORDER BY id DESC LIMIT :limit",
        {"user_id": request.state.user["id"], "before": before, "limit": limit + 1})
    return JSONResponse(page_of(rows, limit, job_out))


# The job runner: claims, heartbeats, the writer.
PROCESS_ID = secrets.token_hex(8)  # names this process's claims on jobs (and on mails, Appendix I)
WRITER_INSTRUCTIONS = ("You write blog posts. Answer with the post only, in Markdown, with no title line: "
                       "the title is given. Follow the author's notes.")
WRITER_MAX_ANSWER_BYTES = 256 * 1024  # a writer's answer past this is refused, not read on
job_runner_wakeups: set[asyncio.Event] = set()


@on_event("job_queued")
def wake_job_runners(event: dict) -> None:
    """A job is waiting: every process's runner looks for room to take it."""
    for woken in job_runner_wakeups:
        woken.set()


class WriterFailed(Exception):
    """The writer gave no usable post: a reason for its owner, naming nothing of the setup; `details` for the log."""

    def __init__(self, reason: str, details: str = ""):
        super().__init__(reason)
        self.details = details


def writer_answer_start(raw: bytes) -> str:
    """The start of a writer's answer, for the log: one line, and never the API key it may quote."""
    start = bytes(raw[:200]).decode(errors="replace")
    return repr(start.replace(WRITER_API_KEY, "[the API key]") if WRITER_API_KEY else start)


async def run_jobs() -> None:
    """Run this process's jobs until cancelled, then put them back to pending: beat, reap, claim while there is room."""
    woken, running = asyncio.Event(), {}  # job id -> its task
    job_runner_wakeups.add(woken)
    try:
        while True:
            with suppress(TimeoutError):
                async with asyncio.timeout(JOB_HEARTBEAT_SECONDS):  # not wait_for: see run_event_bus
                    await woken.wait()
            woken.clear()
            try:
                await beat_and_reap(list(running))
                await fail_jobs_waiting_too_long()
                while len(running) < JOBS_AT_ONCE and (job := await claim_job()):
                    running[job["id"]] = asyncio.create_task(run_job(job))
                    running[job["id"]].add_done_callback(functools.partial(job_done, running, job["id"]))
            except DATABASE_ERRORS as error:  # try again at the next beat
                log.warning("Jobs: could not reach the jobs table (%s)", error)
    finally:
        job_runner_wakeups.discard(woken)
        for task in running.values():
            task.cancel()
        with suppress(*DATABASE_ERRORS):  # out of reach: the jobs are failed as abandoned instead
            await database.execute("UPDATE jobs SET status = 'pending', claimed_by = NULL, updated_at = :now WHERE "
                                   "claimed_by = :me AND status = 'in_progress'", {"me": PROCESS_ID, "now": utc_now()})


def job_done(running: dict, job_id: int, task: asyncio.Task) -> None:
    """Forget a job's task once it ends, and log why if it failed."""
    running.pop(job_id, None)
    if task.cancelled() or not (error := task.exception()):
        return
    if isinstance(error, DatabaseUnavailable):
        log.warning("Jobs: job %s could not be ended (%s); it will be failed as abandoned", job_id, error)
    else:
        log.error("Jobs: job %s failed on our side", job_id, exc_info=error)


ABANDONED_JOBS = "SELECT id, user_id, claimed_by FROM jobs WHERE status = 'in_progress' AND heartbeat_at < :stale"
WRITER_TOO_BUSY = "The writer was too busy to start on this in time; try again in a few minutes."


async def beat_and_reap(running: list[int]) -> None:
    """Refresh the heartbeats of the jobs whose tasks run here; fail the jobs whose heartbeat stopped."""
    now = datetime.now(UTC)
    for job_id in running:
        await database.execute("UPDATE jobs SET heartbeat_at = :now WHERE id = :id AND claimed_by = :me",
                               {"id": job_id, "me": PROCESS_ID, "now": utc_time(now)})
    stale = {"stale": utc_time(now - timedelta(seconds=3 * JOB_HEARTBEAT_SECONDS))}
    if await database.fetch_one(ABANDONED_JOBS, stale):
        async with publishing():  # locked, read again: of two processes reaping at once, one does
            for job in await database.fetch_all(ABANDONED_JOBS + database.LOCKING, stale):
                await end_job(job, "failed", error="The writing was interrupted; try again.")


async def fail_jobs_waiting_too_long() -> None:
    """Fail jobs pending JOB_WAIT_SECONDS after they were asked for, so a flood drains; of two processes, one does."""
    too_old = {"asked_before": utc_time(datetime.now(UTC) - timedelta(seconds=JOB_WAIT_SECONDS))}
    if await database.fetch_one("SELECT 1 FROM jobs WHERE status = 'pending' AND created_at < :asked_before", too_old):
        async with publishing():
            for job in await database.fetch_all(
                    "UPDATE jobs SET status = 'failed', error = :error, updated_at = :now WHERE status = 'pending' "
                    "AND created_at < :asked_before RETURNING id, user_id",
                    too_old | {"error": WRITER_TOO_BUSY, "now": utc_now()}):
                await publish("job_finished", job_id=job["id"], user_id=job["user_id"], status="failed",
                              error=WRITER_TOO_BUSY)


async def claim_job() -> dict | None:
    """Take the oldest pending job for this process, or None; of two processes claiming it, one does."""
    return await database.fetch_one(
        "UPDATE jobs SET status = 'in_progress', claimed_by = :me, heartbeat_at = :now, updated_at = :now WHERE id = "
        "(SELECT MIN(id) FROM jobs WHERE status = 'pending') AND status = 'pending' "
        "RETURNING id, user_id, input, claimed_by, created_at", {"me": PROCESS_ID, "now": utc_now()})


async def run_job(job: dict) -> None:
    """Ask the writer for the post, then end the job: completed (and the draft filled), or failed."""
    fields, error = json.loads(job["input"]), None
    try:
        text = await ask_writer(fields["title"], fields.get("notes", ""))
    except WriterFailed as failure:
        log.warning("Jobs: job %s failed: %s (%s)", job["id"], failure, failure.details)
        error = storable(str(failure))
    except Exception:  # a bug of ours: say so to the owner now rather than when the heartbeat is missed
        log.exception("Jobs: job %s failed", job["id"])
        error = "The writing failed on our side; try again."
    async with publishing():
        if error:
            await end_job(job, "failed", error=error)
            return
        if not await database.fetch_one("SELECT 1 FROM jobs WHERE id = :id AND status = 'in_progress' AND claimed_by "
                                        "= :me" + database.LOCKING, {"id": job["id"], "me": PROCESS_ID}):
            return  # it took so long that another process took it for abandoned, and failed it: no draft
        # The draft takes the post only if it was not saved since the job was asked for (one statement,
        # so a save landing meanwhile is never overwritten); otherwise the text waits on the job.
        filled = await database.fetch_one(
            SAVE_DRAFT + " WHERE drafts.updated_at <= :asked RETURNING user_id",
            {"user_id": job["user_id"], "title": fields["title"], "content": text, "images": "[]", "now": utc_now(),
             "asked": job["created_at"]})
        await end_job(job, "completed", result=text, filled_draft=filled is not None)


async def end_job(job: dict, status: str, result: str | None = None, error: str | None = None,
                  filled_draft: bool = False) -> None:
    """In a publishing transaction: end a job still in progress under its claim, and tell its owner's streams."""
    ended = await database.fetch_one(
        "UPDATE jobs SET status = :status, result = :result, error = :error, filled_draft = :filled, "
        "claimed_by = NULL, updated_at = :now WHERE id = :id AND status = 'in_progress' AND claimed_by = :claimed_by "
        "RETURNING id", {"status": status, "result": result, "error": error, "filled": int(filled_draft),
                         "now": utc_now(), "id": job["id"], "claimed_by": job["claimed_by"]})
    if ended:
        await publish("job_finished", job_id=job["id"], user_id=job["user_id"], status=status, error=error)


async def ask_writer(title: str, notes: str) -> str:
    """The post the writer wrote, in Markdown; WriterFailed, with a reason a person can act on."""
    body = {"model": WRITER_MODEL, "messages": [
        {"role": "system", "content": WRITER_INSTRUCTIONS},
        {"role": "user", "content": f"Title: {title}\n\nNotes: {notes or '(none)'}"}]}
    headers = {"Authorization": f"Bearer {WRITER_API_KEY}"} if WRITER_API_KEY else {}
    host = urlsplit(WRITER_URL).netloc.rpartition("@")[2]  # for the log: never a user or password in the URL
    try:
        async with asyncio.timeout(WRITER_TIMEOUT_SECONDS), httpx.AsyncClient() as client:
            url = WRITER_URL.rstrip("/") + "/chat/completions"
            async with client.stream("POST", url, json=body, headers=headers) as answer:
                raw = bytearray()
                async for chunk in answer.aiter_bytes():
                    raw += chunk
                    if len(raw) > WRITER_MAX_ANSWER_BYTES:
                        raise WriterFailed(
                            f"The writer's answer was longer than {WRITER_MAX_ANSWER_BYTES // 1024} KiB.",
                            f"{host} sent an answer of more than {WRITER_MAX_ANSWER_BYTES} bytes")
    except TimeoutError:
        raise WriterFailed("The writer did not answer in time; try again later.",
                           f"no answer within {WRITER_TIMEOUT_SECONDS:g} s from {host}")
    except httpx.HTTPError as error:
        raise WriterFailed("The writer could not be reached.", f"{type(error).__name__} reaching {host}")
    if answer.status_code != 200:
        said = f"{host} answered {answer.status_code}: {writer_answer_start(raw)}"
        if answer.status_code < 500:
            raise WriterFailed(f"The writer refused the request ({answer.status_code}).", said)
        raise WriterFailed(f"The writer failed to write the post ({answer.status_code}); try again later.", said)
    try:
        text = json.loads(raw)["choices"][0]["message"]["content"]
    except (ValueError, LookupError, TypeError, RecursionError):
        raise WriterFailed("The writer's answer was not a chat completion (no choices[0].message.content).",
                           f"{host} answered {writer_answer_start(raw)}")
    most = DRAFT_BODY["properties"]["content"]["maxLength"]
    if not isinstance(text, str) or not text.strip() or len(text) > most:
        raise WriterFailed("The writer's answer held no text, or more than a draft can hold.", f"from {host}")
    return storable(text)


def storable(text: str) -> str:
    """Text any database stores: a writer's answer without NUL (PostgreSQL) or lone surrogates (UTF-8)."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode()


#### Appendix D. The database drivers: SQLite's writer and readers, PostgreSQL's pool and listener
#
# The only code that queries the app's database (Appendix H's backups also copy it: sqlite3, pg_dump,
# pg_restore). It hands the SQL to the driver as written, on connections taken from `databases`, rather
# than have `databases` compile each query with SQLAlchemy on every call: the drivers take :name or $1
# parameters, asyncpg keeps prepared statements. Rows come back as dicts, a foreign-key failure as
# RowDeletedMeanwhile. Appendix H's steps: `async with database.schema_change(): await database.run_script(...)`.

SQLITE_READERS = 4  # connections that read beside SQLite's one writer
EVENT_CHANNEL = "blog_events"  # PostgreSQL's NOTIFY channel for the event log
LISTENER_CHECK_SECONDS = 5  # how often the listening connection is checked to be alive
EVENT_LOG_LOCK = 720_001  # PostgreSQL's advisory lock for publishing
SCHEMA_LOCK = 720_002  # PostgreSQL's advisory lock for changing the tables
# What a driver raises when its database is out of reach or failing: background tasks log it and retry.
DATABASE_ERRORS = (DatabaseUnavailable, OSError, asyncpg.PostgresError, asyncpg.InterfaceError, sqlite3.Error)
# What says the database is out of reach or cannot write (a 503), not that a query is wrong. PostgreSQL: stopped
# or restarting, out of connections or disk, the network down. SQLite: another process's write lock held past
# busy_timeout, a read-only file, a failing or full disk, a file that cannot be opened.
POSTGRES_UNAVAILABLE = (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError,
                        asyncpg.AdminShutdownError, asyncpg.CrashShutdownError, asyncpg.InsufficientResourcesError)
SQLITE_UNAVAILABLE = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_FULL,
                      sqlite3.SQLITE_CANTOPEN}


@contextmanager
def unavailable_as_such() -> Iterator[None]:
    """Raise a driver's error that says the database is out of reach as DatabaseUnavailable."""
    try:
        yield
    except (sqlite3.Error, asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError, *POSTGRES_UNAVAILABLE) as error:
        if isinstance(error, sqlite3.Error):
            # The low byte: the primary code. A misuse (a list bound as a parameter) has no code at all.
            out_of_reach = getattr(error, "sqlite_errorcode", 0) & 0xFF in SQLITE_UNAVAILABLE
        elif isinstance(error, asyncpg.InterfaceError):  # "connection is closed", not a misused driver
            out_of_reach = "closed" in str(error)
        elif isinstance(error, asyncpg.exceptions.InternalClientError):  # a connection lost mid-BEGIN
            out_of_reach = "another operation" in str(error)
        else:
            out_of_reach = True
        if out_of_reach:
            raise DatabaseUnavailable(f"{type(error).__name__}: {error}") from error
        raise


class SQLiteConnection(sqlite3.Connection):
    """An SQLite connection set up for a web server, as it opens (a PRAGMA holds per connection)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.row_factory = lambda cursor, row: {column[0]: value for column, value in zip(cursor.description, row)}
        self.execute("PRAGMA foreign_keys = ON")  # off by default in SQLite, for history's sake
        self.execute("PRAGMA busy_timeout = 5000")  # wait up to 5 s for another process's writer
        self.execute("PRAGMA journal_mode = WAL")  # readers never wait for the writer
        self.execute("PRAGMA synchronous = NORMAL")  # safe with WAL, and much faster


class Database(databases.Database):
    """The four query methods, whatever the database: `run` is each backend's own."""

    async def fetch_all(self, query: str, values: dict | None = None) -> list[dict]:
        return await self.statement(query, values or {})

    async def fetch_one(self, query: str, values: dict | None = None) -> dict | None:
        return next(iter(await self.statement(query, values or {})), None)

    async def fetch_val(self, query: str, values: dict | None = None):
        row = await self.fetch_one(query, values)
        return None if row is None else next(iter(row.values()))

    async def execute(self, query: str, values: dict | None = None) -> None:
        await self.statement(query, values or {})

    async def statement(self, query: str, values: dict) -> list[dict]:
        """Run one statement; in explain mode, as a step of the request's trace (Appendix J)."""
        return await (explain_statement(self.run, query, values) if explaining.get() else self.run(query, values))


class SQLiteDatabase(Database):
    """SQLite through connections held from connect() to disconnect(): one writer, a few readers.

    SQLite writes one transaction at a time, and WAL lets readers read the last commit meanwhile. So
    every write goes to the writer under a lock, which a transaction holds from BEGIN IMMEDIATE (SQLite's
    write lock, taken at once) to COMMIT: no other request's statement slips into it. A SELECT outside
    a transaction goes to a free reader: a slow read holds up nothing else."""

    LOCKING = ""  # no FOR UPDATE: a transaction here already holds the whole database
    listening = True  # every transaction happens in this one process: it hears them all
    # ?q= through the FTS5 index of schema.sql: posts holding every word ("über" "café"). The index
    # is the outer loop, read newest first, so a page stops early even for a common word (ordered
    # by b.id instead, every match would be sorted first). Whole words only: a prefix ("caf"*)
    # merges every word it begins. bench.py measures the four kinds of search.
    SEARCH = """SELECT s.rowid AS id FROM blog_search s CROSS JOIN blogs b ON b.id = s.rowid
        WHERE blog_search MATCH :search AND s.rowid < :before AND b.status = 'approved'{by_author}
        ORDER BY s.rowid DESC LIMIT :limit"""
    # The feed's gathering and ?author=: without ANALYZE's statistics SQLite would walk every post instead.
    BY_AUTHOR = " INDEXED BY blogs_author_status_id"
    # SQLite has no LATERAL: the feed takes each author's newest ids as a list that the outer
    # author's row fills (CROSS JOIN keeps the authors outside), one author at a time.
    EACH_AUTHOR = "blogs b ON b.id IN ({})"
    TABLE_NAMED = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = :name"

    @staticmethod
    def search_terms(words: list[str]) -> str:
        return " ".join(f'"{word}"' for word in words)  # quoted: no word is taken for FTS5 syntax

    async def connect(self) -> None:
        await super().connect()
        self.write_lock, self.writer_task = asyncio.Lock(), None
        self.writer = await self.open_connection()
        self.readers = asyncio.Queue()
        for _ in range(SQLITE_READERS):
            self.readers.put_nowait(await self.open_connection())
        self.listeners, self.notifications = [], []

    async def open_connection(self) -> databases.core.Connection:
        # `databases` cannot hold a connection outside a task's but through a private attribute (0.9, pinned).
        connection = databases.core.Connection(self, self._backend)
        await connection.__aenter__()
        return connection

    async def disconnect(self) -> None:
        while not self.readers.empty():
            await self.readers.get_nowait().__aexit__(None, None, None)
        await self.writer.__aexit__(None, None, None)
        await super().disconnect()

    async def run(self, query: str, values: dict) -> list[dict]:
        if self.writer_task is asyncio.current_task():  # inside this task's transaction
            return await self.on(self.writer, query, values)
        if query.lstrip().startswith("SELECT"):
            reader = await self.readers.get()
            try:
                return await self.on(reader, query, values)
            finally:
                self.readers.put_nowait(reader)
        async with self.write_lock:  # a statement of its own, committed at once
            return await self.on(self.writer, query, values)

    @staticmethod
    async def on(connection: databases.core.Connection, query: str, values: dict) -> list[dict]:
        try:
            with unavailable_as_such():
                async with connection.raw_connection.execute(query, values) as cursor:
                    return await cursor.fetchall()
        except sqlite3.IntegrityError as error:
            if "FOREIGN KEY" in str(error):
                raise RowDeletedMeanwhile() from error
            raise  # no other integrity error is expected: a bug, answered 500

    @asynccontextmanager
    async def transaction(self, rebuilding: bool = False) -> AsyncIterator[None]:
        """Run the block as one transaction on the writer; notifications go out once it commits. rebuilding:
        foreign keys off, as sqlite.org prescribes (else dropping a table deletes rows referring to it), checked."""
        if self.writer_task is asyncio.current_task():
            raise RuntimeError("Transactions do not nest.")
        async with self.write_lock:
            self.writer_task = asyncio.current_task()
            try:
                if rebuilding:  # before BEGIN: inside a transaction it is a no-op
                    await self.on(self.writer, "PRAGMA foreign_keys = OFF", {})
                await self.on(self.writer, "BEGIN IMMEDIATE", {})
                try:
                    with explain_transaction():  # COMMIT in the trace once it is done
                        yield
                        if rebuilding and (broken := await self.on(self.writer, "PRAGMA foreign_key_check", {})):
                            raise sqlite3.IntegrityError(f"rows refer to rows that are gone: {broken[:3]}")
                        await self.on(self.writer, "COMMIT", {})
                except BaseException:
                    if self.writer.raw_connection.in_transaction:  # not if SQLite has (full disk, I/O error)
                        await self.on(self.writer, "ROLLBACK", {})
                    raise
            finally:
                self.writer_task = None
                committed, self.notifications = self.notifications, []
                if rebuilding:
                    await self.on(self.writer, "PRAGMA foreign_keys = ON", {})
        for notification in committed:
            for listener in self.listeners:
                listener(notification)

    def schema_change(self):
        """Run the block as one transaction that may rebuild tables; BEGIN IMMEDIATE makes other processes wait."""
        return self.transaction(rebuilding=True)

    async def run_script(self, script: str) -> None:
        """Run several statements inside schema_change's transaction, one by one (executescript would commit
        first), each ending at the ";" where SQLite says it is complete (not one in a trigger, comment, string)."""
        statement = ""
        for piece in script.split(";"):
            statement += piece + ";"
            if sqlite3.complete_statement(statement):
                await self.on(self.writer, statement, {})
                statement = ""

    async def lock_event_log(self) -> None:
        """Nothing to do: transactions here take turns, so their events commit in id order."""

    async def notify(self, payload: str) -> None:
        """Like PostgreSQL's NOTIFY: listeners hear it once the transaction commits, never if it rolls back."""
        self.notifications.append(payload)

    async def listen(self, on_notify) -> None:
        """Call on_notify(payload) for every notification, until cancelled."""
        self.listeners.append(on_notify)
        try:
            await asyncio.Event().wait()
        finally:
            self.listeners.remove(on_notify)


@functools.cache
def numbered_parameters(query: str) -> tuple[str, list[str]]:
    """asyncpg numbers its parameters: "id = :id OR parent = :id" -> ("id = $1 OR parent = $1", ["id"]).
    (No SQL here holds a colon in a literal, and casts are written CAST(x AS type), never x::type.)"""
    parameter = r"(?<![:\w]):(\w+)"
    names = list(dict.fromkeys(re.findall(parameter, query)))  # each once, in order of first use
    return re.sub(parameter, lambda match: f"${names.index(match[1]) + 1}", query), names


class PostgresDatabase(Database):
    """PostgreSQL through the pool of `databases`, a connection per query or transaction. Transactions
    really run at once: a rule that reads and then writes locks its rows (LOCKING); events go by NOTIFY."""

    LOCKING = " FOR UPDATE"  # appended to a SELECT whose rows the transaction goes on to change
    listening = False  # until listen() has its connection
    transaction_tasks: set[asyncio.Task] = set()  # the tasks now inside a transaction
    # ?q=: the ids of the newest approved posts below the cursor holding every word (über & café), through
    # schema.sql's full-text index. Left alone, the planner walks the primary key testing every post (a
    # missing word: 0.7 s at 100,000 posts) or sorts every match from the GIN index (a word in every post:
    # 4.7 s). So UNION ALL runs three parts in turn, each only while the page is not full:
    # 1. `recent` tests the newest 500 posts below the cursor: a word in 1 post of 25 fills the page here.
    # 2. For a word found there: the 5,000 ids below them, then the 45,000 below those: the GIN matches that
    #    a bitmap of the window's ids keeps, sorted (a word in 1 post of 70 once sorted 14,000 at a million
    #    posts). "OR id = 0" (no such id) leaves the planner that bitmap only, where it would walk a window it
    #    guesses small. A word found in none of the 500 skips them (each bitmap costs 1 ms at 100,000 posts).
    # 3. Older still (below the 500 for a word not found there), every GIN match, sorted: such a word is rare
    #    (a word in 1 post of 100 misses 500 once in 150). OFFSET 0 fences the planner off the primary key.
    #    `python bench.py reads --posts 1000000` measures each kind.
    SEARCH = """
        WITH recent AS MATERIALIZED (
            SELECT id, status, search FROM blogs WHERE id < :before{by_author} ORDER BY id DESC LIMIT 500),
        found_recently AS MATERIALIZED (
            SELECT id FROM recent WHERE search @@ to_tsquery('simple', :search) AND status = 'approved' LIMIT :limit)
        (SELECT id FROM found_recently)
        UNION ALL
        (SELECT nearer.id FROM (VALUES (0, 5000), (5000, 50000)) AS w (near, far) CROSS JOIN LATERAL (
             SELECT id FROM (SELECT id, status FROM blogs WHERE search @@ to_tsquery('simple', :search){by_author}
                             AND (id < (SELECT MIN(id) FROM recent) - near AND id >= (SELECT MIN(id) FROM recent) - far
                                  OR id = 0) OFFSET 0) AS found
             WHERE status = 'approved' ORDER BY id DESC LIMIT :limit) AS nearer
         WHERE EXISTS (SELECT 1 FROM found_recently))
        UNION ALL
        (SELECT id FROM (SELECT id, status FROM blogs WHERE search @@ to_tsquery('simple', :search){by_author}
                         OFFSET 0) AS older
         WHERE id < (SELECT MIN(id) FROM recent) - CASE WHEN EXISTS (SELECT 1 FROM found_recently) THEN 50000 ELSE 0 END
           AND status = 'approved' ORDER BY id DESC LIMIT :limit)
        LIMIT :limit"""
    BY_AUTHOR = ""  # the feed's gathering and ?author=: PostgreSQL's planner has statistics (autovacuum keeps them)
    EACH_AUTHOR = "LATERAL (SELECT * FROM blogs WHERE id IN ({})) AS b"  # the feed: each author's newest posts
    TABLE_NAMED = "SELECT 1 FROM pg_tables WHERE schemaname = current_schema() AND tablename = :name"

    @staticmethod
    def search_terms(words: list[str]) -> str:
        return " & ".join(words)  # letters and digits only, so none is taken for tsquery syntax

    async def run(self, query: str, values: dict) -> list[dict]:
        query, names = numbered_parameters(query)
        try:
            with unavailable_as_such():
                async with self.connection() as connection:
                    rows = await connection.raw_connection.fetch(query, *[values[name] for name in names])
        except asyncpg.ForeignKeyViolationError as error:
            raise RowDeletedMeanwhile() from error
        except asyncpg.QueryCanceledError as error:  # past STATEMENT_TIMEOUT_SECONDS (see make_database)
            log.warning("A statement ran past %s s and was cancelled: %s", STATEMENT_TIMEOUT_SECONDS, query[:200])
            raise HTTPException(503, "The database took too long to answer; please try again later.") from error
        return [dict(row) for row in rows]

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """Run the block as one transaction on this task's connection, which its queries use too. asyncpg's,
        not `databases`', which keeps its connection out of the pool for ever when BEGIN fails (as while
        PostgreSQL restarts). Nesting raises, as on SQLite: asyncpg would make a savepoint, SQLite cannot."""
        if (task := asyncio.current_task()) in self.transaction_tasks:
            raise RuntimeError("Transactions do not nest.")
        self.transaction_tasks.add(task)
        try:
            with unavailable_as_such(), explain_transaction():  # COMMIT in the trace once asyncpg has committed
                async with self.connection() as connection, connection.raw_connection.transaction():
                    yield
        finally:
            self.transaction_tasks.discard(task)

    @asynccontextmanager
    async def schema_change(self) -> AsyncIterator[None]:
        """Run the block as one transaction (DDL is transactional too) under a lock: schema changes take turns."""
        async with self.transaction():
            await self.execute("SELECT pg_advisory_xact_lock(:key)", {"key": SCHEMA_LOCK})
            yield

    async def run_script(self, script: str) -> None:
        """Run several statements inside schema_change's transaction."""
        async with self.connection() as connection:  # it may index a big table: no timeout for requests
            await connection.raw_connection.execute("SET LOCAL statement_timeout = 0;\n" + script)

    async def lock_event_log(self) -> None:
        """Make publishing transactions take turns till they commit: ids commit in order, none skipped."""
        await self.execute("SELECT pg_advisory_xact_lock(:key)", {"key": EVENT_LOG_LOCK})

    async def notify(self, payload: str) -> None:
        """NOTIFY every listening process; PostgreSQL delivers it on commit, never on rollback."""
        await self.execute("SELECT pg_notify(:channel, :payload)", {"channel": EVENT_CHANNEL, "payload": payload})

    async def listen(self, on_notify) -> None:
        """Call on_notify(payload) for each notification until cancelled, on an unpooled connection (the pool
        UNLISTENs); asyncpg does not reconnect, so this does, then on_notify("") catches up on what went unheard."""
        delay = 0.1
        while True:
            try:
                connection = await asyncpg.connect(  # named, so that pg_stat_activity tells which it is
                    str(self.url), server_settings={"application_name": f"blog.py events, pid {os.getpid()}"})
            except (OSError, asyncpg.PostgresError) as error:
                log.warning("Events: cannot reach PostgreSQL to listen (%s); trying again in %.1f s", error, delay)
            else:
                delay = 0.1  # it connected: a later outage starts the backoff afresh
                try:
                    await self.listen_on(connection, on_notify)
                except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                    log.warning("Events: the listening connection failed (%s)", error)
                finally:
                    self.listening = False
                    connection.terminate()
                log.warning("Events: not listening; reconnecting in %.1f s", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5)

    async def listen_on(self, connection, on_notify) -> None:
        """LISTEN on `connection` until it is lost; checked every few seconds, as a dead network is silent."""
        lost = asyncio.Event()
        connection.add_termination_listener(lambda _: lost.set())
        await connection.add_listener(EVENT_CHANNEL, lambda _connection, _pid, _channel, payload: on_notify(payload))
        await connection.add_listener(EXPLAIN_CHANNEL, lambda _connection, _pid, _channel, payload:
                                      explain_deliveries.append(json.loads(payload)))  # Appendix J
        self.listening = True
        log.info("Events: listening for notifications")
        on_notify("")
        while not lost.is_set():
            try:
                async with asyncio.timeout(LISTENER_CHECK_SECONDS):  # not wait_for: see run_event_bus
                    await lost.wait()
            except TimeoutError:
                await connection.fetchval("SELECT 1", timeout=LISTENER_CHECK_SECONDS)


# Safe to skip: advisory locks end with their transactions, LISTEN has its own connection, and the pool
# still rolls back a transaction left open.
async def keep_session(connection: asyncpg.Connection) -> None:
    """What asyncpg's pool runs on a connection it takes back: nothing (RESET ALL, UNLISTEN * cost a round trip)."""


def make_database(url: str) -> Database:
    """The database for a URL: sqlite:///blog.db or postgresql://user:password@host/name."""
    if url.startswith("sqlite"):
        return SQLiteDatabase(url, factory=SQLiteConnection)
    # No request holds a connection for long: a statement still running after STATEMENT_TIMEOUT_SECONDS
    # is cancelled by PostgreSQL itself, and the client gets a 503 (see PostgresDatabase.run).
    # min_size=0: connections are made as requests need them. With a floor, asyncpg's pool would
    # remake the lost ones on its own while PostgreSQL restarts, logging a traceback each time.
    timeout = {"statement_timeout": str(round(STATEMENT_TIMEOUT_SECONDS * 1000))}  # milliseconds
    return PostgresDatabase(url, reset=keep_session, min_size=0,  # named in pg_stat_activity: restore looks
                            server_settings=timeout | {"application_name": f"blog.py, pid {os.getpid()}"})


database = make_database(DATABASE_URL)


def schema_script(path: Path) -> str:
    """schema.sql or an upgrade step, for this database: its lines for both, and those marked for this one."""
    dialect, keep, script = database.url.dialect, True, []
    for line in path.read_text().splitlines():
        if marker := re.fullmatch(r"-- on (both|sqlite|postgresql):.*", line):
            keep = marker[1] in ("both", dialect)
        elif keep:
            script.append(line)
    script = "\n".join(script)
    if dialect == "postgresql":  # the one difference in shared lines: how an id counts up by itself
        script = re.sub(r"\bid\s+INTEGER PRIMARY KEY AUTOINCREMENT",
                        "id INTEGER GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", script)
    return script


#### Appendix E. The public cache

CACHE_SECONDS = 1  # how long a public page is served from memory: a like shows within it


class PublicCache:
    """What everyone is sent alike, kept as sent for CACHE_SECONDS: the front page, approved blogs.

    Only an approval, or the deletion of an approved blog, makes an entry wrong (an approved blog's text never
    changes): then `clear` empties the cache and moves its version on, here at once and in every other process
    through the event bus; a response computed under an older version is not kept, so a reader racing a writer
    leaves no wrong entry. Likes change counts only: an entry lives CACHE_SECONDS, kept with the ETag made from
    the same row as its body. While this process hears no events, it serves nothing from here.
    """

    def __init__(self, max_bytes: int = 32 * 1024 * 1024):
        self.entries: dict[str, tuple[bytes, dict, float]] = {}  # key -> (body, its ETag header, when it was kept)
        self.version, self.size, self.max_bytes = 0, 0, max_bytes

    def response(self, key: str) -> Response | None:
        body, headers, kept_at = self.entries.get(key, (None, {}, 0.0))
        if body is None or not database.listening or time.monotonic() - kept_at >= CACHE_SECONDS:
            return None
        return Response(body, media_type="application/json", headers=headers)

    def keep(self, key: str, response: Response, version: int) -> None:
        if version != self.version or not database.listening:
            return
        if self.size + len(response.body) > self.max_bytes:  # full, mostly of expired entries: start over
            self.entries.clear()
            self.size = 0
        self.size += len(response.body) - len(self.entries.get(key, (b"", {}, 0.0))[0])
        headers = {"ETag": response.headers["etag"]} if "etag" in response.headers else {}
        self.entries[key] = (response.body, headers, time.monotonic())

    def clear(self) -> None:
        self.version += 1
        self.entries.clear()
        self.size = 0


public_cache = PublicCache()


@on_event("public_changed")
def empty_public_cache(event: dict) -> None:
    """What everyone sees has changed (a blog approved, or a public one deleted): forget the old pages."""
    public_cache.clear()


#### Appendix F. The page at / for browsers (and its explain panel's routes), health, and the API's documents

# page.html, a browser client of this API, has its script and style inline; the Content-Security-Policy lets in
# those two by their SHA-256 and nothing else: user text reaching it as HTML could run no <script> or onerror=.
PAGE = Path(__file__).with_name("page.html").read_text()
DEMO_PLACEHOLDER = '<meta name="demo-accounts" content="">'


def inline_hash(tag: str) -> str:
    """The CSP source that allows page.html's one <tag>...</tag>: "'sha256-3q2+7w...='"."""
    inline = re.search(f"<{tag}>(.*?)</{tag}>", PAGE, re.S).group(1)
    return f"'sha256-{base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()}'"


PAGE_HEADERS = {
    "Content-Security-Policy": f"default-src 'self'; script-src {inline_hash('script')}; "
                               f"style-src {inline_hash('style')}; img-src 'self' data:; object-src 'none'; "
                               "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the stream tickets in the page's URLs go nowhere else
    "Cache-Control": "no-cache",
    "Vary": "Accept",  # the same address answers HTML or JSON: a cache must keep both apart
}


async def home(request: Request) -> Response:
    """Show a browser the page; tell other clients where to go: the API's documents and its health check."""
    if "text/html" in request.headers.get("accept", ""):
        accounts = " ".join(username for username, role in DEMO_ACCOUNTS)
        page = PAGE.replace(DEMO_PLACEHOLDER, f'<meta name="demo-accounts" content="{accounts}">') if DEMO else PAGE
        return HTMLResponse(page, headers=PAGE_HEADERS)
    return JSONResponse({"name": "Blog platform API", "docs": "/docs", "openapi": "/openapi.json",
                         "health": "/health", "api": "/api/blogs/"}, headers={"Vary": "Accept"})


async def health(request: Request) -> Response:
    """Say whether this process can reach its database and hears the event log's notifications."""
    try:
        await database.fetch_val("SELECT 1")
    except DATABASE_ERRORS as error:
        log.warning("Health check: the database did not answer (%s)", error)
        return JSONResponse({"detail": "The database is not answering."}, 503)
    if not database.listening:  # its streams, rooms and cache would fall behind the other processes'
        return JSONResponse({"detail": "This process is not listening for events; it is reconnecting."}, 503)
    return JSONResponse({"status": "ok"})


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
<script>window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui"});</script>
</body>
</html>"""


async def swagger_ui(request: Request) -> Response:
    """Show Swagger UI over the OpenAPI document."""
    # Never inside another site's frame, where a pasted token could be clicked into use (clickjacking).
    return HTMLResponse(SWAGGER_UI_PAGE, headers={"Content-Security-Policy": "frame-ancestors 'none'", "X-Frame-Options": "DENY"})


# The page's "How it works" panel reads these three, in explain mode; Appendix J keeps the traces and says
# who may see which.
@login_required
async def list_traces(request: Request) -> Response:
    """List your requests' traces (an admin: everyone's) and the events that reached you (explain mode only)."""
    user = request.state.user
    return JSONResponse({"items": traces_for(user), "arrivals": [
        explain_shown(delivery) for delivery in reversed(explain_deliveries) if user["id"] in delivery["users"]]})


@login_required
async def get_trace(request: Request) -> Response:
    """Show one of your requests' traces (an admin: anyone's); another user's is a 404 (explain mode only)."""
    trace_id = request.path_params["trace_id"]
    if not (found := [trace for trace in traces_for(request.state.user) if trace["id"] == trace_id]):
        raise HTTPException(404, f"There is no trace {trace_id} of yours in this process.")
    return JSONResponse(found[0])


async def explain_source(request: Request) -> Response:
    """Show blog.py as plain text, for the page's links to its lines (explain mode only)."""
    return PlainTextResponse(Path(__file__).read_text(), headers={"X-Content-Type-Options": "nosniff"})


# The API document, OpenAPI 3.1: bodies and query parameters are the very declarations the handlers
# validate with, and who may call what comes from requires_role, so it cannot drift from the server.

ID, TEXT, MAYBE_TEXT = {"type": "integer"}, {"type": "string"}, {"type": ["string", "null"]}
ID_PATH = {"type": "integer", "maximum": 999_999_999}  # an {id} in a path has at most 9 digits (IdConvertor)
TIMESTAMP = {"type": "string", "format": "date-time", "examples": ["2026-11-21T20:17:24.123Z"]}


def shape(**properties) -> dict:
    """A JSON object schema with every property required."""
    return {"type": "object", "required": list(properties), "properties": properties}


def page_shape(item: str) -> dict:
    """A page of items: {"items": [...], "next_cursor": "42" or null}."""
    return shape(items={"type": "array", "items": {"$ref": f"#/components/schemas/{item}"}}, next_cursor=MAYBE_TEXT)


BLOG_SHAPE = shape(id=ID, title=TEXT, content=TEXT, images=URL_LIST,
                   status={"enum": ["pending", "approved", "rejected"]}, author_id=ID, author=TEXT,
                   created_at=TIMESTAMP, updated_at=TIMESTAMP, likes=ID)
BLOG_SHAPE["properties"]["reject_reason"] = {"type": ["string", "null"], "description": "only on rejected blogs"}
USER = dict(id=ID, username=TEXT, email=TEXT, role={"enum": list(ROLES)}, created_at=TIMESTAMP,
            email_verified={"type": "boolean"})
SHAPES = {
    "User": shape(**USER),
    "Accepted": shape(detail=TEXT),
    "Profile": shape(id=ID, username=TEXT, display_name=MAYBE_TEXT, bio=MAYBE_TEXT, avatar_url=MAYBE_TEXT,
                     created_at=TIMESTAMP, followers=ID, following=ID, blogs=ID),
    "ProfilePage": page_shape("Profile"),
    "Tokens": shape(access_token=TEXT, refresh_token=TEXT, token_type={"const": "bearer"}, expires_in=ID),
    "StreamTicket": shape(ticket=TEXT, expires_in={"const": TICKET_SECONDS}),
    "Blog": BLOG_SHAPE,
    "BlogPage": page_shape("Blog"),
    "Comment": shape(id=ID, blog_id=ID, author_id=ID, author=TEXT, text=TEXT, created_at=TIMESTAMP),
    "CommentPage": page_shape("Comment"),
    "FeatureRequest": shape(id=ID, title=TEXT, description=TEXT, status=TRIAGE_BODY["properties"]["status"],
                            priority=FEATURE_REQUEST_BODY["properties"]["priority"], author_id=ID,
                            created_at=TIMESTAMP, updated_at=TIMESTAMP),
    "FeatureRequestPage": page_shape("FeatureRequest"),
    "Draft": shape(title=TEXT, content=TEXT, images=URL_LIST, updated_at=TIMESTAMP),
    "Job": shape(id=ID, kind={"const": "draft_generation"},
                 status={"enum": ["pending", "in_progress", "completed", "failed"]},
                 result={"type": ["string", "null"], "description": "the Markdown written, once completed"},
                 filled_draft={"type": "boolean", "description": "whether the result went into your draft"},
                 error=MAYBE_TEXT, created_at=TIMESTAMP, updated_at=TIMESTAMP),
    "JobPage": page_shape("Job"),
    "Account": shape(**USER, blogs=ID),
    "AccountPage": page_shape("Account"),
    "Record": shape(id=ID, action={"enum": list(RECORD_ACTIONS)}, actor=TEXT, created_at=TIMESTAMP,
                    blog_id={"type": ["integer", "null"]}, target=MAYBE_TEXT,
                    detail={"type": "object", "description": "blog_rejected: reason; role_changed: from, to; "
                            "feature_request_triaged: status; the others say what they were about"}),
    "RecordPage": page_shape("Record"),
    "History": shape(items={"type": "array", "items": {"$ref": "#/components/schemas/Record"}}),
    "Health": shape(status={"const": "ok"}),
    "Error": shape(detail=TEXT),
}

EVENT_STREAM = {"content": {"text/event-stream": {"schema": TEXT}}, "description": (
    "A text/event-stream that stays open, one event per change that concerns you: `blog_pending` for reviewers, "
    "`blog_reviewed` and `job_finished` for your own blogs and jobs, a `: ping` every 15 s. Send Last-Event-ID (or "
    "?last_event_id=) to replay what you missed. API.md, \"The event stream\", has each event's data.")}
CHAT = ("The live chat under a blog is a WebSocket at /api/blogs/{blog_id}/ws?ticket=STREAM_TICKET: send {\"text\": "
        "\"...\"}; the room receives {\"type\": \"message\", ...comment}, stored as one of these comments. API.md, "
        "\"The chat room\", has the rest.")
PAGE_QUERY = {"limit": LIMIT, "cursor": CURSOR}
STREAM_QUERY = {"ticket": {"type": "string", "description": "a stream ticket (POST /api/auth/stream-ticket)"},
                "token": {"type": "string", "description": "the access token; prefer a ticket (see the README)"},
                "last_event_id": {"type": "string", "description": "the last event's id, for a new EventSource"}}

# Per handler: its body, query parameters, success and own refusals; openapi_operation adds the
# refusals every operation of a kind shares (a bad body, a missing token, a wrong role, an unknown id).
OPERATIONS = {
    health: {"ok": (200, "Health"), "errors": [503]},
    register: {"body": REGISTER_BODY, "ok": (201, "User"), "errors": [409, 429]},
    login: {"body": LOGIN_BODY, "form": True, "ok": (200, "Tokens"), "errors": [401, 429]},
    refresh: {"body": REFRESH_BODY, "ok": (200, "Tokens"), "errors": [401]},
    logout: {"body": REFRESH_BODY, "ok": (204, None)},
    me: {"ok": (200, "User")},
    stream_ticket: {"ok": (200, "StreamTicket")},
    change_password: {"body": PASSWORD_BODY, "ok": (204, None), "errors": [403, 429]},
    forgot_password: {"body": EMAIL_BODY, "ok": (202, "Accepted")},
    reset_password: {"body": RESET_BODY, "ok": (204, None)},
    request_verify_token: {"body": EMAIL_BODY, "ok": (202, "Accepted")},
    verify_email: {"body": TOKEN_BODY, "ok": (200, "User")},
    secure_account: {"body": RESET_BODY, "ok": (204, None)},
    get_profile: {"ok": (200, "Profile")},
    update_profile: {"body": PROFILE_BODY, "ok": (200, "Profile"), "errors": [403, 429]},
    follow_user: {"ok": (204, None), "errors": [409]},
    unfollow_user: {"ok": (204, None)},
    list_followers: {"query": PAGE_QUERY, "ok": (200, "ProfilePage")},
    list_following: {"query": PAGE_QUERY, "ok": (200, "ProfilePage")},
    make_admin: {"ok": (200, "User"), "errors": [409]},
    change_role: {"body": ROLE_BODY, "ok": (200, "User"), "errors": [409]},
    delete_user: {"ok": (204, None), "errors": [409]},
    list_blogs: {"query": PAGE_QUERY | {"q": SEARCH_QUERY, "author": AUTHOR_QUERY}, "ok": (200, "BlogPage")},
    list_users: {"query": PAGE_QUERY | {"q": ACCOUNT_SEARCH, "role": ROLE_QUERY}, "ok": (200, "AccountPage")},
    create_blog: {"body": BLOG_BODY, "ok": (201, "Blog"), "etag": True},
    list_pending_blogs: {"query": PAGE_QUERY, "ok": (200, "BlogPage")},
    get_blog: {"optional_token": True, "ok": (200, "Blog"), "etag": True, "condition": "If-None-Match"},
    update_blog: {"body": BLOG_BODY, "ok": (200, "Blog"), "errors": [403, 409], "etag": True, "condition": "If-Match"},
    blog_history: {"optional_token": True, "ok": (200, "History")},
    delete_blog: {"ok": (204, None), "errors": [403]},
    approve_blog: {"ok": (200, "Blog"), "errors": [409], "etag": True, "condition": "If-Match"},
    reject_blog: {"body": REJECT_BODY, "ok": (200, "Blog"), "errors": [409], "etag": True, "condition": "If-Match"},
    like_blog: {"ok": (204, None)},
    unlike_blog: {"ok": (204, None)},
    list_likes: {"query": PAGE_QUERY, "ok": (200, "ProfilePage")},
    feed: {"query": PAGE_QUERY, "ok": (200, "BlogPage")},
    delete_comment: {"ok": (204, None), "errors": [403]},
    list_comments: {"optional_token": True, "query": PAGE_QUERY, "ok": (200, "CommentPage"), "description": CHAT},
    notifications: {"query": STREAM_QUERY, "ok": (200, EVENT_STREAM), "errors": [429]},
    list_feature_requests: {"query": PAGE_QUERY | {"status": TRIAGE_BODY["properties"]["status"]},
                            "ok": (200, "FeatureRequestPage")},
    create_feature_request: {"body": FEATURE_REQUEST_BODY, "ok": (201, "FeatureRequest")},
    triage_feature_request: {"body": TRIAGE_BODY, "ok": (200, "FeatureRequest")},
    get_draft: {"ok": (200, "Draft"), "errors": [404], "etag": True, "condition": "If-None-Match"},
    save_draft: {"body": DRAFT_BODY, "ok": (200, "Draft"), "etag": True, "condition": "If-Match"},
    delete_draft: {"ok": (204, None)},
    generate_draft: {"body": GENERATE_BODY, "ok": (202, "Job"), "errors": [429, 503]},
    get_job: {"ok": (200, "Job")},
    list_jobs: {"query": PAGE_QUERY, "ok": (200, "JobPage")},
    list_audit: {"query": PAGE_QUERY | {"actor": ACTOR_QUERY, "action": ACTION_QUERY}, "ok": (200, "RecordPage")},
} | dict.fromkeys([list_traces, get_trace, explain_source], {"ok": (200, {"description": 'See API.md, "Explain mode"'}),
                   "errors": [404], "description": "Only in explain mode (--demo or EXPLAIN=true); a 404 otherwise."})


def response(returns, description: str = "OK") -> dict:
    """A documented response: one of SHAPES by name, nothing (None), or a response object as it is."""
    if returns is None or isinstance(returns, dict):
        return returns or {"description": "Done; no content."}
    schema = {"$ref": f"#/components/schemas/{returns}"}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def openapi_operation(route: Route) -> dict:
    """Document one route: summary, who may call it, parameters, body, and every answer it can give."""
    handler, spec = route.endpoint, OPERATIONS[route.endpoint]
    roles, errors = getattr(handler, "roles", None), set(spec.get("errors", []))
    parameters = [{"name": name, "in": "path", "required": True, "schema": ID_PATH if isinstance(convertor, IdConvertor)
                   else TEXT} for name, convertor in route.param_convertors.items()]
    parameters += [{"name": name, "in": "query", "required": False, "schema": rule}
                   for name, rule in spec.get("query", {}).items()]
    operation = {"operationId": handler.__name__, "summary": handler.__doc__.strip().splitlines()[0],
                 "parameters": parameters, "responses": {str(spec["ok"][0]): response(spec["ok"][1])}}
    if "description" in spec:
        operation["description"] = spec["description"]
    if "body" in spec:
        content = {"application/json": {"schema": spec["body"]}}
        if spec.get("form"):  # the OAuth2 password flow posts a form
            content["application/x-www-form-urlencoded"] = {"schema": spec["body"]}
        operation["requestBody"] = {"required": body_needed(spec["body"]), "content": content}
        errors |= {400, 413, 422}
    if roles:
        operation["security"] = [{"bearer": []}, {"password": []}]
        operation["description"] = f"Roles: {', '.join(roles)}. " + operation.get("description", "")
        errors |= {401} | ({403} if set(roles) != set(ROLES) or handler.verified else set())
        if handler.verified:
            operation["description"] += "With REQUIRE_VERIFIED_EMAIL on, it needs a verified address (else 403). "
    if spec.get("optional_token"):
        operation["security"] = [{}, {"bearer": []}, {"password": []}]
        errors.add(401)
    if route.param_convertors:
        errors.add(404)
    if spec.get("query"):
        errors.add(422)
    errors |= document_versions(operation, spec)
    for status in sorted(errors):
        operation["responses"][str(status)] = response("Error", HTTPStatus(status).phrase)
    return operation


ETAG_HEADER = {"description": 'the version sent, e.g. "3.0": send it back in If-Match or If-None-Match', "schema": TEXT}
CONDITIONS = {
    "If-Match": "an ETag you were sent: the save applies only if it is current, else 412; without it, to any version",
    "If-None-Match": "an ETag you were sent: 304 without a body while it is still the current version"}


def document_versions(operation: dict, spec: dict) -> set[int]:
    """Add an operation's ETag header and its If-Match or If-None-Match; return the errors that adds."""
    if spec.get("etag"):
        operation["responses"][str(spec["ok"][0])]["headers"] = {"ETag": ETAG_HEADER}
    if condition := spec.get("condition"):
        operation["parameters"].append({"name": condition, "in": "header", "required": False, "schema": TEXT,
                                        "description": CONDITIONS[condition]})
    if condition == "If-None-Match":
        operation["responses"]["304"] = {"description": "Not Modified: your copy is current",
                                         "headers": {"ETag": ETAG_HEADER}}
    return {412} if condition == "If-Match" else set()


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


#### Appendix G. Log redaction: no token or ticket in a log line


SECRET_PARAMETERS = {"token", "ticket"}
TOKEN_SHAPED = re.compile(r"[\w-]{8,}\.[\w-]{4,}\.[\w-]{8,}")  # three base64url parts: a JWT, a ticket, a mailed link's


def redact_query(target: str) -> str:
    """Hide ?token= and ?ticket= values, names read as Starlette does ("?%74oken=eyJ" -> "?%74oken=[redacted]"), and
    whatever is shaped like a token or ticket, wherever it stands (?x=Bearer+eyJ..., ?eyJ..., %2565yJ...)."""
    path, question_mark, query = target.partition("?")
    pairs = []
    for pair in query.split("&") if question_mark else []:
        name = pair.partition("=")[0]
        pairs.append(name + "=[redacted]" if unquote_plus(name) in SECRET_PARAMETERS else pair)
    return TOKEN_SHAPED.sub("[redacted]", path + question_mark + "&".join(pairs))


def redact_tokens(record: logging.LogRecord) -> bool:
    """A log filter hiding tokens and tickets in uvicorn's lines: a token in a log file is a stolen login."""
    if isinstance(record.args, tuple):
        record.args = tuple(redact_query(arg) if isinstance(arg, str) else arg for arg in record.args)
    return True


#### Appendix H. Schema versions and backups: upgrades/N-name.sql, each once, in order; migrate, backup, restore
#
# The version is the one row of schema_version (a database with tables but not that one is at version 1);
# the code's is the highest N of upgrades/N-name.sql. At start-up, and with `python blog.py migrate`, an
# empty database gets schema.sql stamped with the code's version; an older one each step it lacks, in order,
# each in one transaction with its bump (a step that fails leaves it as it was, and the app refuses to start);
# a newer one is refused, untouched. Each transaction re-reads the version under the schema lock: of several
# processes starting at once, one applies a step and the others see it done.


class SchemaRefused(Exception):
    """The app must not serve this database: its version is newer than the code's, or a step failed."""


def upgrade_steps() -> list[tuple[int, Path]]:
    """The steps in upgrades/, in order: [(2, Path("upgrades/2-accounts-mail.sql")), ...]."""
    steps = []
    for path in UPGRADES_DIR.glob("*.sql") if UPGRADES_DIR.is_dir() else []:
        if not (named := re.fullmatch(r"([1-9][0-9]*)-[\w-]+\.sql", path.name)):
            raise SchemaRefused(f"{path} is not named like upgrades/2-short-name.sql")
        steps.append((int(named[1]), path))
    steps.sort()
    if [number for number, _ in steps] != list(range(2, len(steps) + 2)):  # a gap, or two steps to one version
        raise SchemaRefused(f"The steps in {UPGRADES_DIR} must bring the database to versions 2, 3, 4, ... "
                            f"one each; found {', '.join(path.name for _, path in steps)}")
    return steps


async def schema_version() -> int | None:
    """The database's schema version: 1 if made before versions were kept, None if it is empty."""
    if await database.fetch_one(database.TABLE_NAMED, {"name": "schema_version"}):
        return await database.fetch_val("SELECT version FROM schema_version")
    if await database.fetch_one(database.TABLE_NAMED, {"name": "users"}):
        return 1
    return None


def refuse_a_newer(version: int | None, newest: int) -> None:
    if version is not None and version > newest:
        raise SchemaRefused(f"The database is at schema version {version}, but this code knows versions up to "
                            f"{newest} only: run the newer code, or restore a backup made for this version.")


async def set_schema_version(version: int) -> None:
    """Stamp the database, inside the step's transaction; a version-1 one gets its schema_version table first."""
    if not await database.fetch_one(database.TABLE_NAMED, {"name": "schema_version"}):
        # schema.sql's own definition, the one statement a version-1 database lacks before any step.
        table = re.search(r"CREATE TABLE IF NOT EXISTS schema_version .*?;", SCHEMA_PATH.read_text(), re.DOTALL)
        await database.run_script(table[0])
    await database.execute("DELETE FROM schema_version")
    await database.execute("INSERT INTO schema_version (version) VALUES (:version)", {"version": version})


async def upgrade_schema(dry_run: bool = False, say: Callable[[str], None] = log.info) -> list[str]:
    """Bring the database to the code's version, saying each step; return the steps (with dry_run, only list them)."""
    steps = upgrade_steps()
    newest, version = len(steps) + 1, await schema_version()
    refuse_a_newer(version, newest)
    if version is None:
        pending = [f"schema.sql (a new database, at version {newest})"]
    else:
        pending = [f"{path.name} (to version {number})" for number, path in steps if number > version]
    if dry_run or version == newest:  # up to date: no transaction, whose foreign-key check reads every row
        return pending
    if version is None:
        await apply_step(SCHEMA_PATH, None, newest, say)
    await apply_step(None, 1, 1, say)  # a version-1 database learns its version, even with no step to take
    for number, path in steps:
        await apply_step(path, number - 1, number, say)
    return pending


async def apply_step(path: Path | None, before: int | None, after: int, say: Callable[[str], None]) -> None:
    """In one transaction: if the database is at version `before` (None: empty), run `path` (None: nothing) and
    stamp version `after`; otherwise another process got there first, or the step is not for this database."""
    try:
        async with database.schema_change():
            version, stamped = await schema_version(), await database.fetch_one(
                database.TABLE_NAMED, {"name": "schema_version"})
            if version != before or (path is None and stamped):
                return
            if path:
                await database.run_script(schema_script(path))
            await set_schema_version(after)
    except DATABASE_ERRORS as error:
        raise SchemaRefused(f"The upgrade step {path.name if path else 'stamping version 1'} failed, and the "
                            f"database is left as it was: {type(error).__name__}: {error}") from error
    if path:
        say(f"Schema: applied {path.name}; the database is at version {after}.")


# Backups. SQLite: its online backup API copies a consistent snapshot while the app keeps
# writing (a plain copy of a live WAL database can miss commits still in the -wal file, or tear
# pages). PostgreSQL: pg_dump's custom format, a consistent snapshot that blocks no writer.
# Either is written in a new folder beside FILE that only its owner can enter, and renamed once
# whole: FILE is never half a backup, and nothing planted beside it is written through.


def sqlite_path() -> Path:
    return Path(database.url.database)  # sqlite:///blog.db -> blog.db


def postgres_tool(name: str, *args: str, failed: str) -> str:
    """Run pg_dump or pg_restore (the password in its environment: any local user reads an argv); exit if it fails."""
    if not (program := shutil.which(name)):
        sys.exit(f"{name} is not installed: it comes with PostgreSQL's client programs "
                 "(on Debian and Ubuntu: apt-get install postgresql-client).")
    password = {"PGPASSWORD": database.url.password} if database.url.password else {}
    done = subprocess.run([program, *args], capture_output=True, text=True, env=os.environ | password)
    if done.returncode:
        sys.exit(f"{failed}: {done.stderr.strip()}")
    return done.stdout


def refuse_the_database_itself(file: Path) -> None:
    """Exit if `file` is the SQLite database or its -wal, -shm, -journal: writing there loses writes."""
    named = file.with_name(file.name.removesuffix("-wal").removesuffix("-shm").removesuffix("-journal"))
    if database.url.dialect == "sqlite" and named.resolve() == sqlite_path().resolve():
        sys.exit(f"{file} is the database itself: name another file.")


def back_up(file: Path) -> None:
    """Write a consistent copy of the database to `file`, readable by its owner only, while the app serves."""
    refuse_the_database_itself(file)
    if file.is_symlink() or file.exists() and not file.is_file():  # a link, a folder, a FIFO, a device
        sys.exit(f"{file} is not a regular file: name a new file, or an earlier backup to replace.")
    if database.url.dialect == "sqlite" and not sqlite_path().is_file():
        sys.exit(f"There is no database at {sqlite_path()} to back up.")
    try:  # mkdtemp makes a new folder, mode 0700, and never takes an existing one or a link
        with tempfile.TemporaryDirectory(dir=file.parent, prefix=f".{file.name}.") as folder:
            partial = Path(folder, "backup")
            if database.url.dialect == "postgresql":
                postgres_tool("pg_dump", "--format=custom", f"--file={partial}",
                              f"--dbname={database.url.replace(password=None)}",
                              failed="pg_dump could not back up the database")
            else:
                with closing(sqlite3.connect(sqlite_path())) as source, closing(sqlite3.connect(partial)) as copy:
                    source.backup(copy)  # every page, as of one moment
                    copy.execute("PRAGMA journal_mode = DELETE")  # one self-contained file, no -wal beside it
            partial.chmod(0o600)  # it holds every password hash
            partial.replace(file)
    except (sqlite3.Error, OSError) as error:
        sys.exit(f"Could not write the backup {file}: {error}")
    print(f"Backed up to {file}.")


# The tables every backup of this app holds, whatever its version (version 1 made them all).
VERSION_1_TABLES = {"users", "sessions", "guesses", "blogs", "comments", "follows", "likes", "feature_requests",
                    "drafts", "jobs", "events"}
# What an SQLite database holds, one line each: "table users.email TEXT NOT NULL", "index users_role: CREATE
# INDEX ...", "trigger blog_search_insert: CREATE TRIGGER ..." (a name alone proves nothing, nor does table_info).
SQLITE_OBJECTS = """SELECT m.type || ' ' || m.name || CASE m.type WHEN 'table' THEN '.' || c.name || ' ' || c.type
    || IIF(c."notnull", ' NOT NULL', '') || COALESCE(' DEFAULT ' || c.dflt_value, '') || IIF(c.pk, ' key', '')
    || IIF(c.hidden, ' hidden or generated', '') ELSE ': ' || COALESCE(m.sql, '') END FROM sqlite_master m
    LEFT JOIN pragma_table_xinfo(m.name) c ON m.type = 'table' WHERE m.name NOT LIKE 'sqlite_stat%'"""


def check_backup(path: Path) -> int:
    """The schema version of a backup, once it is found sound and holding only what schema.sql makes, or a later
    step drops; otherwise exit saying what is wrong."""
    if not path.is_file():
        sys.exit(f"There is no file {path}.")
    refuse_the_database_itself(path)
    contents = postgres_backup_contents if database.url.dialect == "postgresql" else sqlite_backup_contents
    version, extra = contents(path)
    try:
        refuse_a_newer(version, len(upgrade_steps()) + 1)
    except SchemaRefused as error:
        sys.exit(f"The backup is refused: {error}")
    # What a later step drops (an index it replaces, say) is dropped again by the upgrade that ends the restore.
    dropped = {name for number, step in upgrade_steps() if number > version
               for name in re.findall(r"DROP \w+ (?:IF EXISTS )?(\w+)", step.read_text())}
    extra = {entry for entry in extra if not ((named := re.match(r"(?:[A-Z][A-Z ]* public|table|index|trigger|view) "
                                                                 r"(\w+)", entry)) and named[1] in dropped)}
    if extra:  # a trigger slipped into a stored backup would act on every later write
        sys.exit(f"{path} holds what this version's schema has not, and is refused: {'; '.join(sorted(extra))}")
    return version


def sqlite_backup_contents(path: Path) -> tuple[int, set[str]]:
    """An SQLite backup's schema version, and what it holds that schema.sql makes not (SQLITE_OBJECTS)."""
    try:  # read-only: checking a file never changes it
        with closing(sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)) as copy, \
                closing(sqlite3.connect(":memory:")) as reference:
            if (verdict := copy.execute("PRAGMA integrity_check").fetchone()[0]) != "ok":
                sys.exit(f"{path} fails SQLite's integrity check: {verdict}")
            tables = {row[0] for row in copy.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            version = copy.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] \
                if "schema_version" in tables else 1
            reference.executescript(schema_script(SCHEMA_PATH))
            extra = {row[0] for row in copy.execute(SQLITE_OBJECTS)} - {
                row[0] for row in reference.execute(SQLITE_OBJECTS)}
    except sqlite3.DatabaseError as error:
        sys.exit(f"{path} is not an SQLite database made by `python blog.py backup` ({error}).")
    if missing := sorted(VERSION_1_TABLES - tables):
        sys.exit(f"{path} is an SQLite database, but not one of this app: it has no {', '.join(missing)} table.")
    if not isinstance(version, int):
        sys.exit(f"{path} has a schema version that is no number: {version!r}.")
    return version, extra


def postgres_backup_contents(path: Path) -> tuple[int, list[str]]:
    """A pg_dump file's schema version, and its entries ("TABLE public users") that are not schema.sql's."""
    contents = postgres_tool("pg_restore", "--list", str(path),
                             failed=f"{path} is not a backup made by `python blog.py backup` on PostgreSQL")
    if missing := sorted(table for table in VERSION_1_TABLES if f" TABLE public {table} " not in contents):
        sys.exit(f"{path} is a PostgreSQL backup, but not one of this app: it has no {', '.join(missing)} table.")
    script = schema_script(SCHEMA_PATH)
    tables = re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", script)
    names = {*tables, *(f"{table}_id_seq" for table in tables), *re.findall(r"INDEX IF NOT EXISTS (\w+)", script)}
    ours = r"(?:TABLE|TABLE DATA|SEQUENCE|SEQUENCE SET|CONSTRAINT|FK CONSTRAINT|INDEX) public (\w+)(?: \w+)?"
    extra = [entry for entry in re.findall(r"^\d+; \d+ \d+ (.*) \S*$", contents, re.MULTILINE)
             if not ((known := re.fullmatch(ours, entry)) and known[1] in names)]
    if not re.search(r" TABLE DATA public schema_version ", contents):
        return 1, extra
    data = postgres_tool("pg_restore", "--data-only", "--table=schema_version", "--file=-", str(path),
                         failed=f"{path} could not be read")
    return int(re.search(r"FROM stdin;\n(\d+)\n", data)[1]), extra


def lock_the_database(exclusive: bool):
    """On SQLite, lock blog.db.in-use until the file returned is closed: shared by every app, alone by a
    restore, so neither runs under the other: an app waits. (flock leaves SQLite's own fcntl locks alone.)"""
    if database.url.dialect != "sqlite":
        return None
    marker = open(f"{sqlite_path()}.in-use", "a")
    try:
        fcntl.flock(marker, fcntl.LOCK_EX | fcntl.LOCK_NB if exclusive else fcntl.LOCK_SH)
    except BlockingIOError:  # a restore, which does not wait
        # Who holds it, from Linux's /proc/locks: "1: FLOCK ADVISORY READ 4242 08:01:1234 0 EOF".
        locks = Path("/proc/locks").read_text().split("\n") if Path("/proc/locks").exists() else []
        holders = {f"process {fields[-4]}" for fields in map(str.split, locks) if fields and "->" not in fields
                   and fields[-3].endswith(f":{Path(marker.name).stat().st_ino}")}
        sys.exit(f"{sqlite_path()} is in use by {', '.join(sorted(holders)) or 'an app'}: stop it, then restore.")
    return marker


async def refuse_a_database_in_use():
    """Exit, naming it, if an app uses the database; on SQLite, return the lock that keeps apps out till done."""
    in_use = lock_the_database(exclusive=True)
    if database.url.dialect == "postgresql" and (apps := await database.fetch_val(
            "SELECT string_agg(DISTINCT application_name, '; ') FROM pg_stat_activity WHERE datname = "
            "current_database() AND application_name LIKE 'blog.py%' AND application_name NOT LIKE :this",
            {"this": f"%, pid {os.getpid()}"})):
        sys.exit(f"The database is in use by {apps}: stop the app, then restore.")
    return in_use


def copy_back(path: Path) -> None:
    """Replace the database's contents with the backup's, all or nothing."""
    if database.url.dialect == "postgresql":  # --clean: what the backup holds replaces what is there; one transaction
        postgres_tool("pg_restore", "--clean", "--if-exists", "--no-owner", "--single-transaction", "--exit-on-error",
                      f"--dbname={database.url.replace(password=None)}", str(path),
                      failed="pg_restore failed, and changed nothing")
        return
    # SQLite: a copy beside the database, checked, renamed over it: the database is whole at every moment,
    # old or new, and what is swapped in is what was checked, whatever became of FILE since.
    target = sqlite_path().resolve()
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as folder:
        copy = Path(folder, "restoring")
        with closing(sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)) as backup, \
                closing(sqlite3.connect(copy)) as new:
            backup.backup(new)
            new.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
        check_backup(copy)
        # Leaving WAL mode writes the old -wal's commits into the old file and deletes it: left beside the
        # new file, SQLite would apply it to that.
        with closing(sqlite3.connect(target)) as old:
            old.execute("PRAGMA journal_mode = DELETE")
        copy.replace(target)


async def upgrade_or_exit(dry_run: bool = False) -> list[str]:
    """Create or upgrade the tables, saying each step; exit with the reason if the database is refused."""
    try:
        return await upgrade_schema(dry_run, say=print)
    except SchemaRefused as error:
        sys.exit(str(error))


async def restore(file: str, replace: bool) -> None:
    """Bring a backup back, after checking it, into a database no app uses; upgrade it to this version."""
    path = Path(file).resolve()  # absolute: a name like "-x" is never taken for an option
    version = check_backup(path)
    async with database:
        in_use = await refuse_a_database_in_use()
        at = await schema_version()
        holds_data = at is not None and await database.fetch_val("SELECT COUNT(*) FROM users") > 0
        if holds_data and not replace:
            sys.exit(f"The database {database.url.obscure_password} holds data: restoring would replace it. "
                     "Back it up first, then run restore again with --replace.")
        if database.url.dialect == "postgresql" and at not in (None, version):
            # pg_restore --clean replaces the tables a backup holds, and leaves another version's beside them:
            # drop them all if they hold no data; refuse otherwise.
            if holds_data:
                sys.exit(f"The database is at schema version {at}, the backup at {version}: restore it into a "
                         "new, empty database (createdb), and point DATABASE_URL at that one.")
            # Names from the catalog, each quoted by PostgreSQL: no value of anyone's reaches this statement.
            tables = await database.fetch_val("SELECT string_agg(quote_ident(tablename), ', ') FROM pg_tables "
                                              "WHERE schemaname = current_schema()")
            await database.execute(f"DROP TABLE {tables} CASCADE")
    with in_use or nullcontext():  # on SQLite no app starts until the restored database is upgraded
        copy_back(path)
        async with database:
            await upgrade_or_exit()
            if database.url.dialect == "postgresql":
                # pg_restore brings no planner's statistics: without them a list's first plans can read every post.
                await database.run_script("ANALYZE")
    print(f"Restored {path} (schema version {version}).")


async def upgrade_before_serving() -> None:
    async with database:
        await upgrade_or_exit()


async def migrate(dry_run: bool) -> None:
    """Apply the pending upgrade steps and exit, for a deploy script; or only list them."""
    async with database:
        pending = await upgrade_or_exit(dry_run)
        version = await schema_version()
    for step in pending if dry_run else []:
        print(f"Would apply {step}")
    if not pending:
        print(f"Nothing to apply: the database is at version {version}, as this code is.")


#### Appendix I. The mail sender: the outbox, claims that lapse, SMTP in a thread, retries
#
# queue_mail writes a mail in the caller's publishing transaction and publishes "mail_queued", which wakes every
# process's sender. A sender claims one due mail at a time with a conditional UPDATE (as jobs are claimed), sends
# it with smtplib in a thread, and deletes it. The claim moves send_after MAIL_LEASE_SECONDS on, so a claim whose
# process died lapses and another sender tries. Failed tries wait a doubling pause from MAIL_RETRY_SECONDS, until
# the mail is MAIL_RETRY_MINUTES old: then it is given up, logged. Sent at least once; twice only if a process
# dies between the server's "250 OK" and the DELETE, which no outbox can rule out.

SMTP_TIMEOUT_SECONDS = 30
MAIL_LEASE_SECONDS = 3 * SMTP_TIMEOUT_SECONDS  # a claimed mail is not tried again before this, unless sent
MAIL_POLL_SECONDS = 1  # how often each sender looks for mails that came due (a retry), unwoken
mail_sender_wakeups: set[asyncio.Event] = set()


class MailRefused(Exception):
    """This mail cannot be sent as configured (e.g. a password with no STARTTLS to protect it)."""


async def queue_mail(kind: str, to: str, subject: str, body: str) -> None:
    """In a publishing transaction: put a mail of `kind` (a key of MAILS_PER_HOUR) in the outbox, unless
    `to` had its hour's count of that kind; it goes out once the transaction commits, notices last."""
    if not await within_limit(f"mail:{kind}:{to}", MAILS_PER_HOUR[kind], 3600):
        return  # nobody is told: the answer of what caused it is the same
    await database.execute(
        "INSERT INTO mails (recipient, subject, body, send_after, created_at, priority) "
        "VALUES (:to, :subject, :body, :now, :now, :priority)",
        {"to": to, "subject": subject, "body": body, "now": utc_now(), "priority": int(kind == "notice")})
    explain_step("mail", to=to, subject=subject)
    await publish("mail_queued")


@on_event("mail_queued")
def wake_mail_senders(event: dict) -> None:
    """A mail is waiting: every process's sender looks for it."""
    for woken in mail_sender_wakeups:
        woken.set()


async def run_mail_sender() -> None:
    """This process's mail sender, until cancelled: send every mail that is due, one at a time."""
    woken = asyncio.Event()
    mail_sender_wakeups.add(woken)
    try:
        while True:
            # Unwoken, it still looks now and then: retries come due. (asyncio.timeout, not wait_for:
            # wait_for's inner task, timing out every second, now and then swallowed the shutdown's cancel.)
            with suppress(TimeoutError):
                async with asyncio.timeout(MAIL_POLL_SECONDS):
                    await woken.wait()
            woken.clear()
            try:
                while mail := await claim_mail():
                    await send_claimed_mail(mail)
            except DATABASE_ERRORS as error:  # try again at the next look
                log.warning("Mail: could not reach the outbox (%s)", error)
    finally:
        mail_sender_wakeups.discard(woken)


async def claim_mail() -> dict | None:
    """Claim the oldest due link, else notice, for this process, or None; of two processes claiming it, one does."""
    now = datetime.now(UTC)
    return await database.fetch_one(
        "UPDATE mails SET claimed_by = :me, send_after = :lease_ends, attempts = attempts + 1 WHERE id = "
        "(SELECT id FROM mails WHERE send_after <= :now ORDER BY priority, id LIMIT 1) AND send_after <= :now "
        "RETURNING id, recipient, subject, body, attempts, claimed_by, created_at",
        {"me": PROCESS_ID, "now": utc_time(now), "lease_ends": utc_time(now + timedelta(seconds=MAIL_LEASE_SECONDS))})


async def send_claimed_mail(mail: dict) -> None:
    """Send a claimed mail and delete it; if it fails, free it for a retry after a pause, or give it up."""
    try:
        await asyncio.to_thread(deliver_mail, mail)
    except (OSError, smtplib.SMTPException, MailRefused) as error:  # SMTPException: a refusal by the server
        if isinstance(error, smtplib.SMTPException):  # its text repeats the recipient's address: not for the log
            error = f"{type(error).__name__} {getattr(error, 'smtp_code', '')}".strip()
        pause = min(MAIL_RETRY_SECONDS * 2 ** (mail["attempts"] - 1), 15 * 60)
        retry_at = datetime.now(UTC) + timedelta(seconds=pause)
        if retry_at <= datetime.fromisoformat(mail["created_at"]) + timedelta(minutes=MAIL_RETRY_MINUTES):
            log.warning("Mail %d could not be sent (%s); trying again in %.1f s", mail["id"], error, pause)
            await database.execute("UPDATE mails SET claimed_by = NULL, send_after = :retry_at WHERE id = :id AND "
                                   "claimed_by = :claimed_by", mail | {"retry_at": utc_time(retry_at)})
            return
        log.error("Mail %d (%s) given up after %d tries: %s", mail["id"], mail["subject"], mail["attempts"], error)
    await database.execute("DELETE FROM mails WHERE id = :id AND claimed_by = :claimed_by", mail)  # sent, or given up


def deliver_mail(mail: dict) -> None:
    """Send a mail over SMTP_URL, or, with none set, write it whole to the log (blocking: a thread's work)."""
    if not SMTP_URL:
        # Logged without arguments: the redaction filter (Appendix G) would hide the token= this
        # mail exists to show. It only happens with no mail server, on a developer's machine.
        log.info(f"Mail (SMTP_URL is not set, so it is written here instead of sent):\nTo: {mail['recipient']}\n"
                 f"Subject: {mail['subject']}\n\n{mail['body']}")
        return
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = MAIL_FROM, mail["recipient"], mail["subject"]
    message.set_content(mail["body"])
    with smtp_connection() as smtp:
        smtp.send_message(message, to_addrs=[mail["recipient"]])  # the envelope: this one recipient, whatever To: says


def smtp_connection() -> smtplib.SMTP:
    """A connection to SMTP_URL's server, encrypted whenever it can be, logged in if the URL has a user."""
    url, context = urlsplit(SMTP_URL), ssl.create_default_context()
    if url.scheme == "smtps":  # TLS from the first byte
        smtp = smtplib.SMTP_SSL(url.hostname, url.port or 465, timeout=SMTP_TIMEOUT_SECONDS, context=context)
    else:
        smtp = smtplib.SMTP(url.hostname, url.port or 587, timeout=SMTP_TIMEOUT_SECONDS)
        smtp.ehlo()
        if smtp.has_extn("starttls"):
            smtp.starttls(context=context)
            smtp.ehlo()
        elif url.username:
            smtp.close()
            raise MailRefused("the SMTP server offers no STARTTLS, and its password is not sent unencrypted")
    if url.username:
        smtp.login(unquote(url.username), unquote(url.password or ""))
    return smtp


#### Appendix J. Explain mode: each request's path through this file, and its events' after it
#
# --demo or EXPLAIN=true (for demos, never production) give each HTTP request a trace, kept by the process that
# served it (API.md shows one): handler, guard, SQL where written and in its transaction, events, records, mails,
# and its events' fan-out in every process. The lesson's choke points call explain_* functions (no-ops untraced).

EXPLAIN_CHANNEL = "blog_explain"  # PostgreSQL: where each process tells how it delivered an event
SECRET_NAMES = re.compile(r"password|hash|token|ticket|stamp|secret|body|^new$|^old$")
SECRET_SHAPES = re.compile(r"^\$2[aby]\$|^eyJ|token=|^[0-9a-f]{32,}$", re.I)  # bcrypt, JWT (lower-cased too), link, hex
ANSWERS_ALIKE = {"ask_for_address"}  # a trace it runs in tells whether an address has an account: admins' only
explaining: ContextVar[dict | None] = ContextVar("explaining", default=None)  # the trace of the request served
explain_traces: collections.deque[dict] = collections.deque(maxlen=100)  # this process's last ones
explain_deliveries: collections.deque[dict] = collections.deque(maxlen=500)  # how each process delivered events
explain_numbers = itertools.count(1)  # a trace's id, in this process


@functools.cache
def explain_function(function) -> dict | None:
    """A function of this file, with its `def` line; a guarded handler, with its guard: decorator, line, roles."""
    if not inspect.isfunction(unwrapped := inspect.unwrap(function)):
        return None  # no route, or the API document's files
    lines, first = inspect.getsourcelines(unwrapped)
    def_line = first + next(n for n, line in enumerate(lines) if line.lstrip().startswith(("def ", "async def ")))
    return {"function": unwrapped.__qualname__, "line": def_line, "guard": hasattr(function, "roles") and {
        "decorator": lines[0].strip(), "line": first, "roles": function.roles, "verified": function.verified}}


def explain_step(kind: str, skipping=frozenset({"publish", "record", "queue_mail"}), **what) -> dict | None:
    """Add a step to the request's trace, at the first caller neither explain mode's own nor named in `skipping`."""
    if (trace := explaining.get()) is None:
        return None
    frame = sys._getframe(1)
    while frame.f_back and (frame.f_code.co_filename != __file__ or frame.f_code.co_name in skipping
                            or frame.f_code.co_name.startswith("explain")):
        frame = frame.f_back
    trace["events"] += [what["id"]] if kind == "event" else []
    in_transaction = any(step["kind"] == "BEGIN" and "ended" not in step for step in trace["steps"])  # never nested
    trace["steps"].append(step := {"kind": kind, "function": frame.f_code.co_qualname, "line": frame.f_lineno,
                                   "depth": int(in_transaction), **what})
    return step


async def explain_statement(run, query: str, values: dict) -> list[dict]:
    """Run a statement as a step of the request's trace: where it is written, its values, rows and time."""
    db, started = explaining.get()["db"], time.perf_counter()
    shown = {name: "(hidden)" if SECRET_NAMES.search(name) or SECRET_SHAPES.search(str(value))  # never a secret
             else value[:100] if isinstance(value, str) else value for name, value in values.items()}
    step = explain_step("sql", skipping={"fetch_all", "fetch_one", "fetch_val", "execute", "statement"},
                        sql=" ".join(query.split()), values=shown, rows=None)
    try:
        step["rows"] = len(rows := await run(query, values))
        return rows
    finally:
        step["ms"] = round((time.perf_counter() - started) * 1000, 2)
        db["statements"], db["ms"] = db["statements"] + 1, round(db["ms"] + step["ms"], 2)


@contextmanager
def explain_transaction() -> Iterator[None]:
    """Mark a transaction in the trace: BEGIN where it opens (explain_step indents what follows), how it ended."""
    begin = explain_step("BEGIN", skipping={"transaction", "publishing"}) or {}
    try:
        yield
        begin["ended"] = "COMMIT"
    finally:
        begin.setdefault("ended", "ROLLBACK")


async def explain_delivery(event: dict) -> None:
    """deliver(), noting for every process which @on_event functions heard the event and whose queues they filled."""
    heard, users = [], set()
    for handler in event_handlers.get(event["type"], []):
        sizes = {queue: (user_id, queue.qsize()) for user_id, queues in user_connections.items() for queue in queues}
        handler(event)
        changed = [user_id for queue, (user_id, size) in sizes.items() if queue.qsize() != size]
        heard.append({"function": handler.__qualname__, "line": (explain_function(handler) or {}).get("line"),
                      "offered": len(changed)})
        users.update(changed)
    delivery = {"event": event["id"], "type": event["type"], "process": os.getpid(), "heard": heard, "users": [*users]}
    if not isinstance(database, PostgresDatabase):
        return explain_deliveries.append(delivery)
    try:  # NOTIFY every process, this one too (see listen_on); a note is no data, and one that fails is logged
        await database.execute("SELECT pg_notify(:channel, :payload)",
                               {"channel": EXPLAIN_CHANNEL, "payload": json.dumps(delivery)})
    except DATABASE_ERRORS as error:  # past NOTIFY's 8,000 bytes, say (an event that reached thousands of users)
        log.warning("Explain: the fan-out of event %s is not shown (%s)", event["id"], error)


def explain_requests(app: Callable) -> Callable:
    """ASGI middleware: each HTTP request's trace, its Server-Timing header and its line in the terminal."""
    async def traced(scope, receive, send) -> None:
        explains = scope["type"] == "http" and scope["path"].startswith("/api/explain")
        if not EXPLAIN and explains and scope["method"] in ("GET", "HEAD"):  # as if there were none; others: 405
            return await JSONResponse({"detail": "Not Found"}, 404)(scope, receive, send)
        if not EXPLAIN or explains or scope["type"] != "http":  # explain mode's own requests are not traced
            return await app(scope, receive, send)
        query, started = scope["query_string"].decode("latin-1"), time.perf_counter()
        explain_traces.append(trace := {"id": next(explain_numbers), "at": utc_now(), "method": scope["method"],
            "path": redact_query(quote(scope["path"]) + ("?" + query if query else "")),  # no ?ticket=, no newline
            "status": None, "process": os.getpid(), "db": {"statements": 0, "ms": 0.0}, "steps": [], "events": []})
        token = explaining.set(trace)

        def answered(status: int) -> None:  # by now the role decorator has read the user (request.state.user), if any
            user = scope.get("state", {}).get("user")
            trace.update(status=status, ms=round((time.perf_counter() - started) * 1000, 2),
                         user=user and {name: user[name] for name in ("id", "username", "role", "email_verified")},
                         handler=explain_function(scope.get("endpoint")))

        async def send_timed(message: dict) -> None:
            if message["type"] == "http.response.start":  # a W3C Server-Timing header, which DevTools shows
                answered(message["status"])
                db, total = trace["db"], trace["ms"]
                message["headers"] = [*message.get("headers", []), (b"explain-trace", str(trace["id"]).encode()), (
                    b"server-timing", f'db;dur={db["ms"]:.1f};desc="{db["statements"]} statements", app;dur={total:.1f}'
                    .encode())]
            await send(message)
        try:
            await app(scope, receive, send_timed)
        finally:  # after a background task too: a mail queued after the answer is in the trace
            explaining.reset(token)
            if trace["status"] is None:  # an exception: its 500 is sent outside this middleware
                answered(500)
            log.info("%s", explain_line(trace))
    return traced


def explain_line(trace: dict) -> str:
    """"POST /api/blogs/5/approve 200 3.1 ms  approve_blog (blog.py:1369)  7 SQL 1.2 ms  record blog_approved"."""
    handler, db = trace["handler"] or {"function": "no route", "line": "-"}, trace["db"]
    said = {"event": "event {type}#{id}", "record": "record {action}", "mail": "mail to {to}"}
    return "  ".join([f"{trace['method']} {trace['path']} {trace['status']} {trace['ms']:.1f} ms",
                      f"{handler['function']} (blog.py:{handler['line']})", f"{db['statements']} SQL {db['ms']:.1f} ms",
                      *(said[step["kind"]].format(**step) for step in trace["steps"] if step["kind"] in said)])


def explain_shown(delivery: dict) -> dict:
    """A delivery as a user sees it: not whom else it reached; with the request that published it, if it was here."""
    by = next((trace for trace in explain_traces if delivery["event"] in trace["events"]), None)
    return {name: value for name, value in delivery.items() if name != "users"} | {
        "published_by": by and {name: by[name] for name in ("method", "path", "handler")}}


def traces_for(user: dict) -> list[dict]:
    """Answered traces a user may see, newest first, with fan-out: their own (but ANSWERS_ALIKE's); an admin, all."""
    return [trace | {"fan_out": [explain_shown(fan) for fan in explain_deliveries if fan["event"] in trace["events"]]}
            for trace in reversed(explain_traces) if trace["status"] and (user["role"] == "admin" or (
                trace["user"] is not None and trace["user"]["id"] == user["id"]
                and not any(step["function"] in ANSWERS_ALIKE for step in trace["steps"])))]


#### The app: routes, error handlers, lifespan (last, as the routes name every handler)

routes = [
    Route("/", home, include_in_schema=False),
    Route("/health", health),
    Route("/openapi.json", openapi_json, include_in_schema=False),
    Route("/docs", swagger_ui, include_in_schema=False),
    Mount("/docs/assets", StaticFiles(directory=swagger_ui_files.static_path), name="swagger_ui_assets"),
    Route("/api/auth/register", register, methods=["POST"]),
    Route("/api/auth/login", login, methods=["POST"]),
    Route("/api/auth/refresh", refresh, methods=["POST"]),
    Route("/api/auth/logout", logout, methods=["POST"]),
    Route("/api/auth/me", me),
    Route("/api/auth/stream-ticket", stream_ticket, methods=["POST"]),
    Route("/api/auth/password", change_password, methods=["POST"]),
    Route("/api/auth/forgot-password", forgot_password, methods=["POST"]),
    Route("/api/auth/reset-password", reset_password, methods=["POST"]),
    Route("/api/auth/request-verify-token", request_verify_token, methods=["POST"]),
    Route("/api/auth/verify", verify_email, methods=["POST"]),
    Route("/api/auth/secure-account", secure_account, methods=["POST"]),
    Route("/api/auth/make-admin/{username}", make_admin, methods=["POST"]),
    Route("/api/users", list_users),
    Route("/api/users/me", update_profile, methods=["PATCH"]),
    Route("/api/users/{username}", get_profile),
    Route("/api/users/{username}", delete_user, methods=["DELETE"]),
    Route("/api/users/{username}/role", change_role, methods=["PATCH"]),
    Route("/api/users/{username}/follow", follow_user, methods=["PUT"]),
    Route("/api/users/{username}/follow", unfollow_user, methods=["DELETE"]),
    Route("/api/users/{username}/followers", list_followers),
    Route("/api/users/{username}/following", list_following),
    Route("/api/blogs/", list_blogs),
    Route("/api/blogs/", create_blog, methods=["POST"]),
    Route("/api/blogs/pending", list_pending_blogs),
    Route("/api/blogs/{blog_id:id}", get_blog),
    Route("/api/blogs/{blog_id:id}", update_blog, methods=["PUT"]),
    Route("/api/blogs/{blog_id:id}", delete_blog, methods=["DELETE"]),
    Route("/api/blogs/{blog_id:id}/approve", approve_blog, methods=["POST"]),
    Route("/api/blogs/{blog_id:id}/reject", reject_blog, methods=["POST"]),
    Route("/api/blogs/{blog_id:id}/history", blog_history),
    Route("/api/blogs/{blog_id:id}/like", like_blog, methods=["PUT"]),
    Route("/api/blogs/{blog_id:id}/like", unlike_blog, methods=["DELETE"]),
    Route("/api/blogs/{blog_id:id}/likes", list_likes),
    Route("/api/feed", feed),
    Route("/api/blogs/{blog_id:id}/comments", list_comments),
    Route("/api/comments/{comment_id:id}", delete_comment, methods=["DELETE"]),
    WebSocketRoute("/api/blogs/{blog_id:id}/ws", chat),
    Route("/api/notifications/sse", notifications),
    Route("/api/feature-requests/", list_feature_requests),
    Route("/api/feature-requests/", create_feature_request, methods=["POST"]),
    Route("/api/feature-requests/{request_id:id}", triage_feature_request, methods=["PATCH"]),
    Route("/api/session/draft", get_draft),
    Route("/api/session/draft", save_draft, methods=["POST"]),
    Route("/api/session/draft", delete_draft, methods=["DELETE"]),
    Route("/api/session/draft/generate", generate_draft, methods=["POST"]),
    Route("/api/jobs", list_jobs),
    Route("/api/jobs/{job_id:id}", get_job),
    Route("/api/audit", list_audit),
    Route("/api/explain", list_traces),
    Route("/api/explain/{trace_id:id}", get_trace),
    Route("/api/explain/source", explain_source),
]


async def http_error(request: Request, error: HTTPException) -> Response:
    """Every refusal, ours or Starlette's (404, 405), as {"detail": "..."}."""
    headers = dict(error.headers or {})
    if error.status_code == 405:  # Allow: every route's methods at this path, not one's as Starlette's says
        matching = [route for route in routes
                    if isinstance(route, Route) and route.matches(request.scope)[0] != Match.NONE]
        outright = [route for route in matching if not route.param_convertors]  # "/api/users/me", not "{username}"
        headers["Allow"] = ", ".join(sorted(set().union(*(route.methods for route in outright or matching))))
    return JSONResponse({"detail": error.detail}, error.status_code, headers=headers)


async def deleted_meanwhile(request: Request, error: RowDeletedMeanwhile) -> Response:
    """A write that refers to a row another request has just deleted: a 404 that says so, not a 500."""
    return JSONResponse({"detail": "What this request refers to was deleted meanwhile."}, 404)


async def database_unavailable(request: Request, error: DatabaseUnavailable) -> Response:
    """The database is out of reach or cannot write for now: a 503 to retry, not a 500 and a traceback."""
    log.warning("%s %s: %s", request.method, request.url.path, error)
    return JSONResponse({"detail": "The database is unavailable for a moment; please try again shortly."}, 503,
                        headers={"Retry-After": "5"})


async def server_error(request: Request, error: Exception) -> Response:
    """An unexpected failure: logged by Starlette with its traceback; the client learns nothing internal."""
    return JSONResponse({"detail": "Something went wrong on our side; please try again."}, 500)


class JSONCORSMiddleware(CORSMiddleware):
    """Starlette's CORS middleware, with its refusal of a preflight (400) in JSON like every error, not text."""

    def preflight_response(self, request_headers) -> Response:
        answer = super().preflight_response(request_headers)
        if answer.status_code == 200:
            return answer
        headers = {name: value for name, value in answer.headers.items() if name not in ("content-length", "content-type")}
        detail = f"{answer.body.decode()}: browsers may call this API only from the origins, and with the headers, it allows."
        return JSONResponse({"detail": detail}, answer.status_code, headers=headers)


def refuse_a_weak_secret_key() -> None:
    """Stop with a message that says how to make a good key, if SECRET_KEY is under 32 bytes."""
    if SECRET_KEY_TOO_SHORT:
        sys.exit("SECRET_KEY is too short: it signs every token, and needs at least 32 bytes. Make one with\n"
                 "    python3 -c 'import secrets; print(secrets.token_urlsafe(48))'")


def end_streams_when_stopping() -> None:
    """On SIGINT or SIGTERM, end every event stream before uvicorn's handler runs: its graceful shutdown
    waits for open responses, and a stream never ends by itself (EventSource reconnects, elsewhere)."""
    loop = asyncio.get_running_loop()

    def end_streams() -> None:
        for queue in streams:
            end(queue, SERVER_STOPPING)
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        uvicorn_handler = signal.getsignal(signal_number)
        if callable(uvicorn_handler):
            def handler(number, frame, uvicorn_handler=uvicorn_handler):
                loop.call_soon_threadsafe(end_streams)
                uvicorn_handler(number, frame)
            signal.signal(signal_number, handler)


@asynccontextmanager
async def lifespan(app: Starlette):
    """Connect, create or upgrade the tables unless `python blog.py` did, start the background tasks; undo it all."""
    for logger in ("uvicorn.access", "uvicorn.error"):  # the access log, and the WebSocket lines
        logging.getLogger(logger).addFilter(redact_tokens)
    refuse_a_weak_secret_key()
    if SECRET_KEY_IS_RANDOM:
        log.warning("SECRET_KEY is not set: using a random key, so tokens will not outlive a restart.")
    log.info("Explain mode is %s", "on: every request is traced (never on a public server)" if EXPLAIN else "off")
    in_use = lock_the_database(exclusive=False)  # on SQLite: restore refuses while an app holds it
    await database.connect()
    if not getattr(app.state, "schema_checked", False):  # by `python blog.py`, which refuses a bad database plainly
        await upgrade_schema()  # under uvicorn blog:app, a worker, or a test; SchemaRefused stops the start
    public_cache.clear()  # what an earlier run of the app in this process kept may be stale
    app.state.search_turns = asyncio.Semaphore(1)
    if not SMTP_URL:
        log.warning("SMTP_URL is not set: mails (a password reset's link, say) are written to this log, not sent.")
    background = [asyncio.create_task(run()) for run in (run_event_bus, run_jobs, run_mail_sender)]
    if threading.current_thread() is threading.main_thread():  # only there can signals be handled
        end_streams_when_stopping()
    try:
        yield
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)  # the job runner puts its jobs back first
        await database.disconnect()
        if in_use:
            in_use.close()


app = Starlette(
    routes=routes,
    middleware=[Middleware(JSONCORSMiddleware, allow_origins=CORS_ORIGINS, allow_methods=["*"],
                           allow_headers=["Authorization", "Content-Type", "Last-Event-ID", "If-Match", "If-None-Match"],
                           expose_headers=["ETag"]),  # a page's script may read a version, to send it back
                Middleware(explain_requests)],
    exception_handlers={HTTPException: http_error, RowDeletedMeanwhile: deleted_meanwhile,
                        DatabaseUnavailable: database_unavailable, Exception: server_error},
    lifespan=lifespan,
)


#### Command line: create-admin, --demo, and serving (migrate, backup and restore are in Appendix H)


def read_new_password() -> str:
    """Ask for a password twice (on a terminal), or read two lines from standard input."""
    ask = getpass.getpass if sys.stdin.isatty() else lambda _prompt: sys.stdin.readline().rstrip("\n")
    first, second = ask("Password: "), ask("Password again: ")
    if first != second:
        sys.exit("The two passwords differ.")
    return first


async def add_user_from_command_line(username: str, email: str, password: str, role: str) -> bool:
    """Store a user checked like a registration, verified; False if the name or email is taken."""
    fields = validate({"username": username, "email": email, "password": password}, REGISTER_BODY)
    return await add_user(fields, role, verified=True) is not None  # their owner typed the address in


async def create_admin(username: str, email: str, password: str) -> None:
    """The first admin, from the command line: nobody can make themselves one over HTTP."""
    async with database:
        await upgrade_or_exit()
        try:
            created = await add_user_from_command_line(username, email, password, "admin")
        except HTTPException as error:
            sys.exit(error.detail)
    if not created:
        sys.exit(f"The username {username!r} or the email {email!r} is already taken.")
    print(f"Admin {username} created.")


SHUTDOWN_GRACE_SECONDS = 3  # how long uvicorn waits for open requests when told to stop
DEMO_ACCOUNTS = [("demo-admin", "admin"), ("demo-approver", "approver"), ("demo-user", "user")]
DEMO_BLOGS = [("Welcome to the blog", "approved", None), ("Waiting for review", "pending", None),
              ("A rough first try", "rejected", "Please add an introduction.")]


async def seed_demo() -> None:
    """One account per role and a blog in each status, so a walkthrough starts at once."""
    async with database:
        await upgrade_or_exit()
        for username, role in DEMO_ACCOUNTS:
            await add_user_from_command_line(username, f"{username}@example.com", f"{username}-password", role)
        author = await database.fetch_one(USER_BY_NAME, {"username": "demo-user"})
        for title, status, reason in DEMO_BLOGS:
            await database.execute(
                "INSERT INTO blogs (title, content, images, search_words, status, reject_reason, author_id, "
                "created_at, updated_at) SELECT :title, :content, :images, :search_words, :status, :reason, "
                ":author_id, :now, :now WHERE NOT EXISTS (SELECT 1 FROM blogs WHERE title = :title)",
                blog_values({"title": title, "content": f"# {title}\n\nWritten by the demo seed."})
                | {"status": status, "reason": reason, "author_id": author["id"], "now": utc_now()})
    print("Demo accounts (their passwords are public: never run --demo on a public server):")
    for username, role in DEMO_ACCOUNTS:
        print(f"  {role:9} username {username:14} password {username}-password")


def main(argv: list[str]) -> None:
    """Parse the command line; with no command, serve the API."""
    global DEMO, EXPLAIN
    parser = argparse.ArgumentParser(description="The blog platform API.")
    parser.add_argument("--demo", action="store_true", help="seed demo accounts and posts, then serve")
    parser.add_argument("--workers", type=int, default=1, help="app processes to serve with (PostgreSQL only)")
    commands = parser.add_subparsers(dest="command")
    admin = commands.add_parser("create-admin", help="create an admin account (asks for the password)")
    admin.add_argument("username")
    admin.add_argument("email")
    upgrade = commands.add_parser("migrate", help="apply the pending schema upgrades, then exit")
    upgrade.add_argument("--dry-run", action="store_true", help="list what would be applied, change nothing")
    commands.add_parser("backup", help="write a consistent copy of the database to FILE").add_argument("file")
    back = commands.add_parser("restore", help="bring a backup back, upgraded to this version")
    back.add_argument("file")
    back.add_argument("--replace", action="store_true", help="replace a database that holds data")
    args = parser.parse_args(argv)
    if args.command == "migrate":
        return asyncio.run(migrate(args.dry_run))
    if args.command == "backup":
        return back_up(Path(os.path.abspath(args.file)))  # not resolve(): a link at FILE is refused, not followed
    if args.command == "restore":
        return asyncio.run(restore(args.file, args.replace))
    refuse_a_weak_secret_key()
    if args.command == "create-admin":
        return asyncio.run(create_admin(args.username, args.email, read_new_password()))
    if args.workers > 1 and database.url.dialect == "sqlite":
        sys.exit("More than one worker needs PostgreSQL: on SQLite the one writer connection and the event "
                 "bus live in one process. Set DATABASE_URL=postgresql://..., or run one worker.")
    if args.demo:
        asyncio.run(seed_demo())
        DEMO = EXPLAIN = True  # the page at / offers the accounts and shows each request's path, in each worker too
        os.environ.update(DEMO="true", EXPLAIN="true")
    else:  # upgrade once, before any worker starts, and refuse without a traceback
        asyncio.run(upgrade_before_serving())
    app.state.schema_checked = True  # this process's lifespan need not; workers import "blog:app" and check anew
    uvicorn.run(app if args.workers == 1 else "blog:app", workers=args.workers, host=HOST, port=PORT,
                proxy_headers=True, forwarded_allow_ips=FORWARDED_ALLOW_IPS, ws_max_size=CHAT_MAX_FRAME_BYTES,
                ws_ping_interval=WEBSOCKET_PING_SECONDS, ws_ping_timeout=WEBSOCKET_PING_SECONDS,
                timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS, access_log=not EXPLAIN)  # explain: its own line


if __name__ == "__main__":
    main(sys.argv[1:])
