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

import anyio
import gradio as gr
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

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


def routes(handlers: dict) -> list[Route]:
    """The ``/api/{name}`` route for the handlers ``add_endpoints`` registered (name -> fn)."""
    # each handler's arguments, read once here rather than on every call
    signatures = {name: {n: p for n, p in inspect.signature(fn).parameters.items() if n != "request"}
                  for name, fn in handlers.items()}

    async def endpoint(request: Request) -> JSONResponse:
        app = request.app
        cookie = (request.cookies.get(f"access-token-{app.cookie_id}")
                  or request.cookies.get(f"access-token-unsecure-{app.cookie_id}"))
        user = app.tokens.get(cookie)
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
        for name, value in kwargs.items():  # the handlers' hints are str or int: hold them to it
            want = params[name].annotation
            if want in (str, int, dict) and type(value) is not want and not (
                    value is None and params[name].default is None):
                kind = ("list of tie groups" if name == "ranking" else
                        {str: "string", int: "integer", dict: "object"}[want])
                return JSONResponse({"error": f"{name} must be a JSON {kind}, "
                                              f"not {json.dumps(value)[:40]}"}, status_code=400)
        call_as = gr.Request(request, username=user)
        try:
            if inspect.iscoroutinefunction(fn):
                result = await fn(**kwargs, request=call_as)
            else:  # database work: off the event loop, as Gradio runs sync handlers
                result = await anyio.to_thread.run_sync(lambda: fn(**kwargs, request=call_as))
        except gr.Error as err:
            return JSONResponse({"error": err.message}, status_code=400)
        return JSONResponse(result)

    return [Route("/api/{name}", endpoint, methods=["POST"])]
