"""The scriptable API as plain JSON over HTTP: ``POST /api/<name>`` with keyword arguments.

The same handlers as the Gradio endpoints of ``api.py`` (one implementation per action, the
role checks inside it), reached without Gradio's per-call machinery (session state, block
lookup, pre/post-processing): a label costs about half the server CPU, which is what keeps
latency down when dozens of annotators' tools submit at once (BENCHMARKS.md).

    import requests
    s = requests.Session()
    s.post("http://127.0.0.1:7860/login", data={"username": "ann", "password": "..."})
    task = s.post("http://127.0.0.1:7860/api/next_task", json={}).json()
    s.post("http://127.0.0.1:7860/api/submit_label", json={
        "task_id": task["id"], "ranking": [[task["responses"][1]["id"]], [task["responses"][0]["id"]]],
        "margin": "better"}).json()   # -> {"label_id": ..., "task_id": ..., "superseded": null}

The caller logs in with the studio's own ``/login`` (the same session cookie as the browser).
Answers: 200 with the result as JSON; 400 ``{"error": "..."}`` for a refused or invalid call
(wrong role, unknown task, bad ranking, unknown argument, JSON nested over ``MAX_DEPTH``);
401 without a login; 403 from another web page's origin (guard.py); 404 for a name that is
not an endpoint; 413 for a body over ``MAX_BODY`` (refused from its Content-Length, or as soon
as that much has arrived); 415 for a body that is not ``application/json``.
"""
import inspect
import json
import time
import traceback

import anyio
import gradio as gr
from gradio.routes import ORJSONResponse   # (Gradio's own: its run route answers with it)
from gradio.utils import error_payload
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, request_response

MAX_BODY = 1 << 20  # a label is a few hundred bytes; refuse anything absurd before parsing it
MAX_DEPTH = 32      # arguments are strings, numbers and a ranking (a list of lists)


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The request body, read no further than ``limit`` bytes (BodyTooLarge past it)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise BodyTooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:  # (chunked, or a lying Content-Length): stop reading here
            raise BodyTooLarge
    return bytes(body)


def nested_too_deep(value, limit: int = MAX_DEPTH) -> bool:
    """Whether a parsed JSON value nests lists/objects deeper than ``limit`` (no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (list, dict)):
            if depth > limit:
                return True
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return False


def _too_deep() -> JSONResponse:
    return JSONResponse({"error": f"body nests deeper than {MAX_DEPTH} levels"}, status_code=400)


def _type_problem(params: dict, kwargs: dict) -> str | None:
    """Why the arguments do not fit the handlers' hints (str or int: held to them), or None."""
    for name, value in kwargs.items():
        want = params[name].annotation
        if want in (str, int, dict) and type(value) is not want and not (
                value is None and params[name].default is None):
            kind = ("list of tie groups" if name == "ranking" else
                    {str: "string", int: "integer", dict: "object"}[want])
            return f"{name} must be a JSON {kind}, not {json.dumps(value)[:40]}"
    return None


async def _call(fn, kwargs: dict, request: Request, user: str):
    call_as = gr.Request(request, username=user)
    if inspect.iscoroutinefunction(fn):
        return await fn(**kwargs, request=call_as)
    # database work: off the event loop, as Gradio runs sync handlers
    return await anyio.to_thread.run_sync(lambda: fn(**kwargs, request=call_as))


def _user(request: Request) -> str | None:
    app = request.app
    cookie = (request.cookies.get(f"access-token-{app.cookie_id}")
              or request.cookies.get(f"access-token-unsecure-{app.cookie_id}"))
    return app.tokens.get(cookie)


class FastPaths:
    """The scriptable API's hot routes, answered by the Guard (guard.py) itself, after its
    origin and login checks, without Gradio's middleware and FastAPI's router (whose route
    matching walks every route Gradio registered: about 1 ms of CPU per request here).

    - ``POST /api/<name>``: ``endpoint`` below, exactly as the route Gradio's app also holds.
    - ``POST /gradio_api/run/<name>`` of an endpoint ``add_endpoints`` registered, when the
      body is a plain call (``data`` with one value per argument, each of the hinted type):
      the same handler, and the answer Gradio's own route gives (``{"data": [result], ...}``;
      a refusal: status 500 and Gradio's error payload). Anything else (other keys, missing
      or ill-typed arguments, another name) goes to Gradio's route unchanged.
    """

    RUN_PREFIX = "/gradio_api/run/"
    RUN_KEYS = {"data", "session_hash", "event_data", "fn_index", "trigger_id"}

    def __init__(self, endpoint, handlers: dict):
        self.handlers = handlers
        self.signatures = _signatures(handlers)
        self.endpoint = request_response(endpoint)
        self.runs = {name: [0.0, 0] for name in handlers}   # (total seconds, calls) per name

    def match(self, scope) -> "callable | None":
        """The ASGI app answering this request here, or None (Gradio answers it). The app
        takes a fourth argument: Gradio's app, for a call it hands back."""
        if scope["type"] != "http" or scope.get("method") != "POST":
            return None
        path = scope.get("path", "")
        if path.startswith("/api/") and path.count("/") == 2 and len(path) > 5:
            scope["path_params"] = {"name": path[5:]}
            return self.api
        if path.startswith(self.RUN_PREFIX) and path[len(self.RUN_PREFIX):] in self.handlers:
            return self.run
        return None

    async def api(self, scope, receive, send, gradio_app) -> None:
        await self.endpoint(scope, receive, send)

    async def run(self, scope, receive, send, gradio_app) -> None:
        raw, more = await _read_up_to(receive, MAX_BODY)
        if raw is None:   # the client went away
            return
        request = Request(scope, receive)
        name = scope["path"][len(self.RUN_PREFIX):]
        call = None if more else self._plain_call(request, name, raw)
        if call is None:  # not a plain call: Gradio's route answers it, body and all
            return await gradio_app(scope, _replay(raw, more, receive), send)
        fn, kwargs, user, blocks = call
        start = time.monotonic()
        try:
            result = await _call(fn, kwargs, request, user)
        except Exception as err:  # noqa: BLE001 (as Gradio's route: 500 with its payload)
            if not isinstance(err, gr.Error) or err.print_exception:
                traceback.print_exc()
            answer = JSONResponse(error_payload(err, blocks.show_error), status_code=500)
            return await answer(scope, receive, send)
        took = time.monotonic() - start
        total = self.runs[name]
        total[0] += took
        total[1] += 1
        await ORJSONResponse({"data": [result], "is_generating": False, "duration": took,
                              "average_duration": total[0] / total[1], "render_config": None,
                              "changed_state_ids": [], "used_cache": None})(scope, receive, send)

    def _plain_call(self, request: Request, name: str, raw: bytes):
        """(handler, arguments, user, blocks) when the body is a call Gradio would hand to the
        handler as it is, else None."""
        app = request.app
        blocks = app.get_blocks() if hasattr(app, "get_blocks") else None
        user = _user(request)
        if blocks is None or not blocks.api_open or user is None:
            return None
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            return None
        if not isinstance(body, dict) or set(body) - self.RUN_KEYS or nested_too_deep(body) \
                or body.get("fn_index") is not None or body.get("event_data") is not None:
            return None
        params, data = self.signatures[name], body.get("data")
        if not isinstance(data, list) or len(data) != len(params):
            return None
        kwargs = dict(zip(params, data))
        if _type_problem(params, kwargs) is not None:
            return None
        return self.handlers[name], kwargs, user, blocks


async def _read_up_to(receive, limit: int) -> tuple[bytes | None, bool]:
    """The body's first ``limit`` bytes or all of it, and whether more follows; (None, False)
    when the client disconnected."""
    chunks, size, more = [], 0, True
    while more and size <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return None, False
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        more = message.get("more_body", False)
    return b"".join(chunks), more


def _replay(raw: bytes, more: bool, receive):
    """A ``receive`` that gives back the body read so far, then the rest from the client."""
    given = False

    async def again():
        nonlocal given
        if not given:
            given = True
            return {"type": "http.request", "body": raw, "more_body": more}
        return await receive()
    return again


def _signatures(handlers: dict) -> dict:
    """Each handler's arguments but ``request``, read once rather than on every call."""
    return {name: {n: p for n, p in inspect.signature(fn).parameters.items() if n != "request"}
            for name, fn in handlers.items()}


def routes(handlers: dict, run_names=()) -> tuple[list[Route], FastPaths]:
    """The ``/api/{name}`` route for the handlers (name -> fn), and the Guard's fast paths
    (``FastPaths``): that endpoint, and Gradio's run route of the ``run_names`` (endpoints
    registered with ``gr.api``, whose answer Gradio passes on as the handler returns it)."""
    signatures = _signatures(handlers)

    async def endpoint(request: Request) -> JSONResponse:
        user = _user(request)
        if user is None:
            return JSONResponse({"error": "not logged in: POST /login first"}, status_code=401)
        fn = handlers.get(request.path_params["name"])
        if fn is None:
            return JSONResponse({"error": f"no endpoint {request.path_params['name']!r}; "
                                          f"endpoints: {', '.join(sorted(handlers))}"}, status_code=404)
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            # a cross-site form cannot send this type without the browser asking first (CORS),
            # so another web page cannot label in a logged-in annotator's name
            return JSONResponse({"error": "send the arguments as application/json"}, status_code=415)
        try:
            body = await read_body(request)
        except BodyTooLarge:
            return JSONResponse({"error": f"request body too large (limit {MAX_BODY} bytes)"},
                                status_code=413)
        try:
            kwargs = json.loads(body) if body.strip() else {}
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            return JSONResponse({"error": f"body is not JSON: {err}"}, status_code=400)
        except RecursionError:  # (Python's parser gives up at about 1,000 levels)
            return _too_deep()
        if nested_too_deep(kwargs):
            return _too_deep()
        if not isinstance(kwargs, dict):
            return JSONResponse({"error": "body must be a JSON object of arguments"}, status_code=400)
        params = signatures[request.path_params["name"]]
        unknown = sorted(set(kwargs) - set(params))
        missing = [n for n, p in params.items() if p.default is p.empty and n not in kwargs]
        if unknown or missing:
            problem = (f"unknown argument(s) {', '.join(unknown)}" if unknown
                       else f"missing argument(s) {', '.join(missing)}")
            return JSONResponse({"error": f"{problem}; {fn.__name__} takes: "
                                          f"{', '.join(params) or 'nothing'}"}, status_code=400)
        if isinstance(kwargs.get("ranking"), list):  # JSON natively here; the handler takes text
            kwargs["ranking"] = json.dumps(kwargs["ranking"])
        problem = _type_problem(params, kwargs)
        if problem:
            return JSONResponse({"error": problem}, status_code=400)
        try:
            result = await _call(fn, kwargs, request, user)
        except gr.Error as err:
            return JSONResponse({"error": err.message}, status_code=400)
        return JSONResponse(result)

    return ([Route("/api/{name}", endpoint, methods=["POST"])],
            FastPaths(endpoint, {name: handlers[name] for name in run_names}))
