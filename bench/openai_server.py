"""A minimal OpenAI-compatible ``POST /v1/chat/completions`` server over a local transformers
model, for benchmarking ``prefstudio generate --model openai:...`` without vLLM.

Like the serving engines it stands in for, it batches: requests that arrive while a batch is
being generated wait in a queue, and the next batch takes up to ``max_batch`` of them (those
with the same temperature, top_p and max_tokens), so more requests in flight means fuller
batches. ``n`` is honoured (n rows of the batch). Per-request seeds are not: a batch has one
random stream. ``usage.completion_tokens`` counts tokens up to and including the
end-of-sequence token, as ``bench/generate.py`` counts them in-process.

    server = LocalOpenAIServer(model, tok, name="smollm2-135m-instruct").start()
    ... openai:{server.url}#smollm2-135m-instruct ...
    server.stop()
"""
from __future__ import annotations

import json
import os
import queue
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from policy.generate import SamplingParams, generate  # noqa: E402


class _Pending:
    def __init__(self, body: dict):
        self.body = body
        self.key = (float(body.get("temperature", 1.0)), float(body.get("top_p", 1.0)),
                    int(body.get("max_tokens", 256)))
        self.done = threading.Event()
        self.reply: dict | None = None


class LocalOpenAIServer:
    def __init__(self, model, tok, name: str, max_batch: int = 16, port: int = 0):
        self.model, self.tok, self.name, self.max_batch = model, tok, name, max_batch
        self.queue: queue.Queue[_Pending] = queue.Queue()
        self.batches: list[int] = []          # rows per generated batch (for the report)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                if self.path.rstrip("/") != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                try:
                    body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                    assert isinstance(body["messages"], list)
                except (ValueError, KeyError, TypeError, AssertionError):
                    return self._send(400, {"error": {"message": "expected a JSON body with messages"}})
                pending = _Pending(body)
                server.queue.put(pending)
                pending.done.wait()
                self._send(200, pending.reply)

            def _send(self, status: int, payload: dict):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._stop = threading.Event()

    def start(self) -> "LocalOpenAIServer":
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        threading.Thread(target=self._batcher, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def _batcher(self) -> None:
        while not self._stop.is_set():
            try:
                first = self.queue.get(timeout=0.1)
            except queue.Empty:
                continue
            batch, later = [first], []
            while len(batch) < self.max_batch:     # everything already waiting, same settings
                try:
                    nxt = self.queue.get_nowait()
                except queue.Empty:
                    break
                (batch if nxt.key == first.key else later).append(nxt)
            for p in later:
                self.queue.put(p)
            self._answer(batch)

    def _answer(self, batch: list[_Pending]) -> None:
        temperature, top_p, max_tokens = batch[0].key
        rows = [(p, c) for p in batch for c in range(int(p.body.get("n", 1)))]
        self.batches.append(len(rows))
        params = SamplingParams(max_new_tokens=max_tokens, temperature=temperature, top_p=top_p)
        out = generate(self.model, self.tok, [p.body["messages"] for p, _ in rows], params, k=1,
                       batch_size=max(len(rows), 1), progress=False)
        answers: dict[int, list[dict]] = {}
        for (p, _), (cand,) in zip(rows, out):
            answers.setdefault(id(p), []).append(cand)
        for p in batch:
            cands = answers[id(p)]
            p.reply = {"object": "chat.completion", "model": self.name, "choices": [
                {"index": i, "message": {"role": "assistant", "content": c["text"]},
                 "finish_reason": "stop" if c["finished"] else "length"}
                for i, c in enumerate(cands)],
                "usage": {"completion_tokens": sum(c["tokens"] for c in cands)}}
            p.done.set()


def main() -> None:
    """``python bench/openai_server.py --port 8011``: serve the default model until Ctrl-C."""
    import argparse
    from policy.lm import load_policy
    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--port", type=int, default=8011)
    args = ap.parse_args()
    model, tok = load_policy(args.model)
    server = LocalOpenAIServer(model, tok, args.model, port=args.port).start()
    print(f"serving openai:{server.url}#{args.model}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
