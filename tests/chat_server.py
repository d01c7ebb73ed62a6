"""A real chat-completions server on 127.0.0.1 for judge and generation tests, its answers decided by the test.

    with ChatServer(brain) as server:          # brain(request: Request) -> Reply
        judge = OpenAIJudge(parse_judge_spec(server.spec("m")))

``Request`` carries the parsed body, the headers, the two responses shown as A and B (parsed
back out of the judge prompt) and a running request number; ``Reply`` says what to send: a
status, a JSON body or raw bytes, headers. ``verdict(p_a)`` builds the usual 200 reply with
logprobs for a verdict whose p(A) is ``p_a``.
"""
from __future__ import annotations

import json
import math
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


@dataclass
class Request:
    n: int                      # 0-based number of this request on the server
    body: dict
    headers: dict
    a: str                      # the response shown as A
    b: str                      # the response shown as B
    principle: str


@dataclass
class Reply:
    status: int = 200
    json: dict | None = None
    raw: bytes | None = None
    headers: dict = field(default_factory=dict)
    delay: float = 0.0          # seconds to wait before answering (to make requests overlap)
    drop: bool = False          # close the connection without answering


def verdict(p_a: float, labels=("A", "B"), text: str | None = None, leading: str = "") -> Reply:
    """A 200 reply whose verdict token puts p(A) = p_a (logprobs of both options listed)."""
    p_a = min(max(p_a, 1e-9), 1 - 1e-9)
    a, b = labels
    chosen = a if p_a >= 0.5 else b
    top = [{"token": a, "logprob": math.log(p_a)}, {"token": b, "logprob": math.log(1 - p_a)}]
    tokens = []
    if leading:
        tokens.append({"token": leading, "logprob": -0.01, "top_logprobs": []})
    tokens.append({"token": chosen, "logprob": math.log(p_a if chosen == a else 1 - p_a),
                   "top_logprobs": top})
    return Reply(json={"id": "x", "object": "chat.completion", "choices": [{
        "index": 0, "finish_reason": "stop",
        "message": {"role": "assistant", "content": text if text is not None else leading + chosen},
        "logprobs": {"content": tokens}}]})


def completion(texts: list[str], finish_reason: str = "stop") -> Reply:
    """A 200 reply with one choice per text (generation), with token usage."""
    return Reply(json={"object": "chat.completion", "choices": [
        {"index": i, "finish_reason": finish_reason, "message": {"role": "assistant", "content": t}}
        for i, t in enumerate(texts)],
        "usage": {"completion_tokens": sum(len(t.split()) for t in texts)}})


def text_reply(text: str) -> Reply:
    """A 200 reply without logprobs (a server that does not give them)."""
    return Reply(json={"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]})


class ChatServer:
    def __init__(self, brain: Callable[[Request], Reply], port: int = 0):
        self.brain = brain
        self.requests: list[Request] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                user = body["messages"][-1]["content"]
                a = re.search(r"\[Response \w+\]\n(.*?)\n\n\[Response", user, re.S)
                b = re.search(r".*\[Response \w+\]\n(.*?)\n\nWhich response", user, re.S)
                system = body["messages"][0]["content"].split("\n\n")
                principle = re.search(r"^(\S+): ", system[1]) if len(system) > 1 else None
                with server._lock:
                    req = Request(len(server.requests), body, dict(self.headers),
                                  a.group(1) if a else "", b.group(1) if b else "",
                                  principle.group(1) if principle else "")
                    server.requests.append(req)
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    reply = server.brain(req)
                    if reply.delay:
                        threading.Event().wait(reply.delay)
                finally:
                    # out of flight before the answer leaves: once the client has read it, it
                    # may send its next request while this thread is still being scheduled
                    with server._lock:
                        server.in_flight -= 1
                if reply.drop:
                    self.close_connection = True
                    return
                payload = reply.raw if reply.raw is not None else json.dumps(reply.json).encode()
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in reply.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

        ThreadingHTTPServer.allow_reuse_address = True
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def spec(self, model: str = "judge-model") -> str:
        return f"openai:{self.url}#{model}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "ChatServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
