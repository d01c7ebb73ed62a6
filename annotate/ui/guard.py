"""The studio's front door: one ASGI layer outside all of Gradio, for what must hold on every
request whatever route serves it.

- **Cross-origin forgery.** Cookies are not kept apart by port and SameSite does not separate
  ports, so a page served from another port of the same host (or any site, over plain HTTP)
  could act as the logged-in user. A browser always names the page's origin (``Origin``, or
  at least ``Referer``) on such requests, so every request that acts — any method but
  GET/HEAD/OPTIONS, ``GET /logout``, a WebSocket — is refused with 403 unless that origin is
  the studio's own (the scheme, host and port the request was sent to) or one the admin
  allowed (``prefstudio serve --allow-origin URL``). Requests with neither header do not come
  from a web page (curl, scripts, gradio_client) and pass; they need a login as before.
- **CORS.** Gradio's own CORS layer answers any localhost origin with that origin and
  ``Allow-Credentials``; here every ``Access-Control-*`` header is dropped from answers, except
  to an allowed origin, and a preflight from any other origin is refused.
- **Strangers** reach the login page, its static files and ``/login``, nothing else: every
  other route answers 401 (among them Gradio's cancel, reset, heartbeat and stream routes,
  which need no login of their own); the login page comes without the API schema Gradio
  embeds in every page, and with a line of script that shows why a login was refused when it
  was the rate limit.
- **Files** of the workspace (exports, uploads, Gradio's cache of uploads) are served through
  ``/gradio_api/file=`` to admins only.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from urllib.parse import urlsplit

from gradio.utils import abspath
from starlette.datastructures import Headers, MutableHeaders

log = logging.getLogger(__name__)
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
ACTING_GETS = {"/logout", "/logout/"}
# all a stranger needs: the login page, its static files, and /login; everything else of
# Gradio's (cancel, reset, heartbeat, stream, startup-events, …) answers 401 without a login
STRANGER_PAGES = {"/", "/favicon.ico", "/theme.css", "/gradio_api/theme.css", "/robots.txt",
                  "/manifest.json", "/logout", "/logout/",
                  "/gradio_api/startup-events"}  # (launch() calls it itself; runs once)
STRANGER_PREFIXES = ("/assets/", "/static/", "/svelte/", "/pwa_icon")
FILE_ROUTES = ("/gradio_api/file=", "/gradio_api/file/")
_API_INFO = re.compile(rb"window\.gradio_api_info = .*?;</script>", re.S)
# Gradio's login form says nothing when a login is refused with 429: show the server's reason
# ("too many failed logins; try again in N s") above the form
LOGIN_LIMIT_JS = rb"""<script>(() => {
  const fetch0 = window.fetch.bind(window);
  window.fetch = async (input, init) => {
    const response = await fetch0(input, init);
    const url = typeof input === "string" ? input : String((input && input.url) || input);
    if (response.status === 429 && /\/login\/?$/.test(url)) {
      response.clone().json().then((body) => {
        let box = document.getElementById("ps-login-limit");
        if (!box) {
          box = document.createElement("p");
          box.id = "ps-login-limit";
          box.style.cssText = "position:fixed;top:16px;left:50%;transform:translateX(-50%);"
            + "z-index:1000;background:#fff3cd;color:#664d03;padding:8px 14px;border-radius:6px";
          document.body.prepend(box);
        }
        box.textContent = body.detail;
      }).catch(() => {});
    }
    return response;
  };
})();</script>"""
DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def origin_of(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin or URL, ports filled in; None when it has none."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port or DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname or port is None:
        return None
    return parts.scheme.lower(), parts.hostname.lower(), port


def normalise_origins(urls) -> set[tuple[str, str, int]]:
    """The admin's ``--allow-origin`` values; a value that is no origin is an error."""
    out = set()
    for url in urls or ():
        origin = origin_of(url)
        if origin is None:
            raise ValueError(f"--allow-origin needs a URL like https://studio.example.org, "
                             f"not {url!r}")
        out.add(origin)
    return out


def open_to_strangers(path: str, method: str) -> bool:
    if method == "POST":
        return path in ("/login", "/login/")
    return path in STRANGER_PAGES or path.startswith(STRANGER_PREFIXES)


class Guard:
    """ASGI middleware wrapping the whole app (see the module docstring)."""

    def __init__(self, app, *, allowed_origins=(), workspace: Path, admin_check, fast_paths=None):
        self.app = app
        self.fast = fast_paths     # rest.FastPaths: the API's hot routes, answered here
        self.allowed = normalise_origins(allowed_origins)
        self.workspace = Path(workspace).resolve()
        self.is_admin = admin_check  # scope -> True / False / None (no valid session)

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        path, method = scope.get("path", ""), scope.get("method", "GET")
        sender = self._page_origin(headers)
        allowed_sender = sender is not None and sender in self.allowed
        if sender is not None and not allowed_sender and sender != self._own_origin(scope, headers):
            if method == "OPTIONS" or method not in SAFE_METHODS or path in ACTING_GETS \
                    or scope["type"] == "websocket":
                return await self._refuse(scope, send, 403, _cross_origin_message(headers))
        if allowed_sender and method == "OPTIONS" and "access-control-request-method" in headers:
            return await self._preflight(scope, send, headers)  # (preflights carry no cookie)
        admin = self.is_admin(scope)  # None: a stranger
        if admin is None and not (scope["type"] == "http" and method in ("GET", "HEAD", "POST")
                                  and open_to_strangers(path, method)):
            return await self._refuse(scope, send, 401, "not logged in")
        if scope["type"] == "websocket":
            return await self.app(scope, receive, send)
        if not admin and path.startswith(FILE_ROUTES) and self._in_workspace(path):
            return await self._refuse(scope, send, 403,
                                      "only admins may download files of the workspace")
        # the login page (not its static files): read it uncompressed to take the schema out
        strip_api_info = admin is None and not path.startswith(STRANGER_PREFIXES)
        if strip_api_info:
            scope = {**scope, "headers": [(k, v) for k, v in scope["headers"]
                                          if k.lower() != b"accept-encoding"]}
        cors = headers.get("origin") if allowed_sender else None
        answer = _Answer(send, cors, strip_api_info)
        fast = self.fast.match(scope) if self.fast is not None and admin is not None else None
        if fast is not None:   # (every check above has been made; the handler checks the role)
            return await self._answer_fast(fast, scope, receive, answer)
        await self.app(scope, receive, answer)

    async def _answer_fast(self, fast, scope, receive, send) -> None:
        """A fast path's answer; an error it did not expect is a 500, as Starlette's outermost
        middleware would make it (and logged)."""
        started = False

        async def tracked(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)
        try:
            await fast(scope, receive, tracked, self.app)
        except Exception:
            log.exception("%s %s failed", scope.get("method"), scope.get("path"))
            if started:
                raise
            await self._refuse(scope, send, 500, "Internal Server Error")

    # -- helpers -----------------------------------------------------------------------------
    @staticmethod
    def _page_origin(headers: Headers) -> tuple | None | str:
        """The origin of the page that sent the request: Origin, else Referer's; None when
        neither is there; the string "unknown" for a header that names no origin ("null")."""
        for name in ("origin", "referer"):
            value = headers.get(name)
            if value:
                return origin_of(value) or "unknown"
        return None

    @staticmethod
    def _own_origin(scope, headers: Headers) -> tuple | None:
        host = headers.get("host")
        return origin_of(f"{scope.get('scheme', 'http')}://{host}") if host else None

    def _in_workspace(self, path: str) -> bool:
        prefix = next(p for p in FILE_ROUTES if path.startswith(p))
        try:
            target = abspath(path[len(prefix):]).resolve()
        except (OSError, ValueError):
            return True  # unreadable name: treat as inside, refuse
        return target == self.workspace or self.workspace in target.parents

    async def _preflight(self, scope, send, headers: Headers) -> None:
        allow = {"access-control-allow-origin": headers["origin"],
                 "access-control-allow-credentials": "true",
                 "access-control-allow-methods": "GET, POST, OPTIONS",
                 "access-control-allow-headers": headers.get("access-control-request-headers", ""),
                 "access-control-max-age": "600", "vary": "Origin"}
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(k.encode(), v.encode()) for k, v in allow.items()]})
        await send({"type": "http.response.body", "body": b""})

    @staticmethod
    async def _refuse(scope, send, status: int, message: str) -> None:
        if scope["type"] == "websocket":  # closing before accepting answers the handshake 403
            await send({"type": "websocket.close", "code": 1008, "reason": message[:120]})
            return
        body = json.dumps({"error": message, "detail": message}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _cross_origin_message(headers: Headers) -> str:
    sender = headers.get("origin") or headers.get("referer") or "?"
    return (f"cross-origin request refused: {sender[:100]} is not this studio's origin "
            f"(an admin can allow it with `prefstudio serve --allow-origin URL`)")


class _Answer:
    """``send`` of one response: CORS headers only for an allowed origin; for a stranger's
    HTML page, the embedded API schema emptied (the body is held until it is complete)."""

    def __init__(self, send, cors_origin: str | None, strip_api_info: bool):
        self.send, self.cors, self.strip = send, cors_origin, strip_api_info
        self.start = None
        self.chunks: list[bytes] = []

    async def __call__(self, message):
        if message["type"] == "http.response.start":
            headers = MutableHeaders(scope=message)
            for key in [k for k in headers.keys() if k.startswith("access-control-")]:
                del headers[key]
            if self.cors:
                headers["access-control-allow-origin"] = self.cors
                headers["access-control-allow-credentials"] = "true"
                headers.add_vary_header("Origin")
            self.strip = self.strip and headers.get("content-type", "").startswith("text/html")
            if self.strip:
                self.start = message
                return
        elif message["type"] == "http.response.body" and self.strip:
            self.chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            empty = b"window.gradio_api_info = {};</script>" + LOGIN_LIMIT_JS
            body = _API_INFO.sub(lambda _: empty, b"".join(self.chunks), count=1)
            MutableHeaders(scope=self.start)["content-length"] = str(len(body))
            await self.send(self.start)
            message = {"type": "http.response.body", "body": body}
        await self.send(message)
