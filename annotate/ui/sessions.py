"""Logins and sessions: who is logged in, for how long, and how often a password may be guessed.

Gradio keeps its sessions in ``app.tokens`` (cookie token -> user name) for ever, and its
``/login`` checks any number of passwords, each on the event loop. The studio puts its own
``/login`` route in front of Gradio's and its own ``Sessions`` in ``app.tokens``:

- a session ends after ``--session-hours`` (default 12), when the user's password or role
  changes, or when the user is removed (``store.session_stamp``);
- after ``per_name`` failed logins for one user name within ``window`` seconds, or
  ``per_address`` from one client address, that name or address is locked for ``lockout``
  seconds ("too many failed logins; try again in N s"), even for the right password;
- passwords are checked in a worker thread, so guessing does not slow everyone else down.
"""
from __future__ import annotations

import math
import secrets
import threading
import time
from collections import deque
from collections.abc import MutableMapping

import anyio
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .. import store

SESSION_HOURS = 12.0
MAX_LOGIN_BODY = 64 << 10  # HTTP servers enforce the Content-Length, so checking it suffices


class Sessions(MutableMapping):
    """``app.tokens`` for Gradio: token -> user name, for as long as the session is valid."""

    def __init__(self, db: store.Store, hours: float = SESSION_HOURS, clock=time.monotonic):
        if not hours > 0:
            raise ValueError(f"--session-hours must be a positive number, not {hours}")
        self.db, self.lifetime, self.clock = db, hours * 3600.0, clock
        self._live: dict[str, tuple[str, str | None, float]] = {}  # token -> user, stamp, ends
        self._lock = threading.Lock()

    def __setitem__(self, token: str, user: str) -> None:
        stamp = store.session_stamp(self.db, user)
        now = self.clock()
        with self._lock:
            for old in [t for t, (_, _, ends) in self._live.items() if ends <= now]:
                del self._live[old]  # expired sessions nobody came back with
            self._live[token] = (user, stamp, now + self.lifetime)

    def __getitem__(self, token: str) -> str:
        user = self._valid(token)
        if user is None:
            raise KeyError(token)
        return user

    def _valid(self, token: str) -> str | None:
        """The session's user while it lasts; an ended session is forgotten here."""
        entry = self._live.get(token)
        if entry is None:
            return None
        user, stamp, ends = entry
        if self.clock() >= ends or stamp is None or store.session_stamp(self.db, user) != stamp:
            with self._lock:
                self._live.pop(token, None)
            return None
        return user

    def __delitem__(self, token: str) -> None:
        with self._lock:
            del self._live[token]

    def __iter__(self):  # (Gradio's logout looks every session up: only live ones here)
        return iter([token for token in list(self._live) if self._valid(token) is not None])

    def __len__(self) -> int:
        return sum(1 for _ in self)


class LoginLimiter:
    """Failed logins in a sliding window, per user name and per client address."""

    def __init__(self, per_name: int = 10, per_address: int = 30, window: float = 600.0,
                 lockout: float = 300.0, clock=time.monotonic):
        self.limits = {"name": per_name, "address": per_address}
        self.window, self.lockout, self.clock = window, lockout, clock
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._locked: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def wait(self, name: str, address: str) -> int:
        """Seconds until this name and address may try again (0: now)."""
        now = self.clock()
        until = max(self._locked.get(("name", name), 0.0), self._locked.get(("address", address), 0.0))
        return math.ceil(until - now) if until > now else 0

    def failed(self, name: str, address: str) -> None:
        now = self.clock()
        with self._lock:
            if len(self._failures) > 10_000:  # many names tried: forget the ones gone quiet
                for key in [k for k, q in self._failures.items() if q[-1] < now - self.window]:
                    del self._failures[key]
            for key in (("name", name), ("address", address)):
                seen = self._failures.setdefault(key, deque())
                seen.append(now)
                while seen and seen[0] < now - self.window:
                    seen.popleft()
                if len(seen) >= self.limits[key[0]]:
                    self._locked[key] = now + self.lockout
                    seen.clear()

    def succeeded(self, name: str) -> None:
        with self._lock:
            self._failures.pop(("name", name), None)


def cookie_names(app) -> tuple[str, str]:
    """Gradio's two session cookies (Secure, and a plain one for http://)."""
    return f"access-token-{app.cookie_id}", f"access-token-unsecure-{app.cookie_id}"


def caller(scope) -> str | None:
    """The logged-in user of a request (None without a valid session)."""
    app = scope.get("app")
    tokens = getattr(app, "tokens", None)
    if tokens is None:
        return None
    cookies = HTTPConnection(scope).cookies
    secure, plain = cookie_names(app)
    token = cookies.get(secure) or cookies.get(plain)
    return tokens.get(token) if token else None


def login_routes(db: store.Store, limiter: LoginLimiter) -> list[Route]:
    """``POST /login`` (Gradio's form: username, password), placed before Gradio's own."""

    async def login(request: Request) -> JSONResponse:
        size = request.headers.get("content-length", "")
        if not size.isdigit() or int(size) > MAX_LOGIN_BODY:
            return _refused(413, "a login is a small form with a Content-Length (at most 64 KiB)")
        async with request.form(max_files=0, max_fields=10) as form:
            name = str(form.get("username") or "").strip()
            password = str(form.get("password") or "")
        address = request.client.host if request.client else "unknown"
        wait = limiter.wait(name, address)
        if wait:
            return _refused(429, f"too many failed logins; try again in {wait} s")
        role = await anyio.to_thread.run_sync(store.verify_user, db, name, password)
        if role is None:
            limiter.failed(name, address)
            return _refused(400, "Incorrect credentials.")
        limiter.succeeded(name)
        app = request.app
        token = secrets.token_urlsafe(32)
        app.tokens[token] = name
        response = JSONResponse({"success": True})
        secure, plain = cookie_names(app)
        # Lax: not sent with another site's requests that act (POST, fetch); the origin check
        # in guard.py also covers what Lax leaves open (another port of the same host)
        response.set_cookie(secure, token, httponly=True, samesite="lax", secure=True)
        response.set_cookie(plain, token, httponly=True, samesite="lax")
        return response

    return [Route("/login", login, methods=["POST"]), Route("/login/", login, methods=["POST"])]


def _refused(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message, "error": message}, status_code=status)
