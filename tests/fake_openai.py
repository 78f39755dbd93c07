"""A small deterministic server that speaks OpenAI's chat-completions protocol over real HTTP.

Answers: the option named by ``EXPECT=<option>`` in the last user message, else the first option of
the JSON schema's enum (or "Pass"). Confidence is carried in the log-probabilities: the answer's
tokens get log(``p_answer``). Faults are queued (``server.faults.append("429")``) and each is used
by one request: "429", "500", "timeout" (sleeps past the client's timeout), "invalid_label",
"malformed_json", "no_logprobs", "reject_format" (400 on response_format), "html" (a 200 that is not JSON), "echo_auth" / "echo_auth_rationale" /
"echo_auth_error" (a reply, a rationale or an error that quotes the request's API key back), "huge" (a
valid reply of ``huge_bytes`` that says its length), "huge_undeclared" (the same without Content-Length, as
a stream), "long_rationale" (a usable answer whose rationale is 20,000 characters) and "drip" (a valid
reply sent a byte every ``drip_interval`` s). Requests for a model in ``drip_models`` always drip.
``latency`` adds a fixed delay per call. ``write(body)`` answers free text (a reflection model) for the
requests it returns a string for.
It also speaks the Batch API (/files, /batches, /files/<id>/content): a batch completes on its
``batch_polls``-th poll, answering every line like a live call (``batch_faults`` fail lines).
"""
from __future__ import annotations

import json
import math
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

_EXPECT = re.compile(r"EXPECT=([A-Za-z0-9_\- ]+?)(?:\s*$|\s*\n|\s*[.;,])", re.MULTILINE)


@dataclass(frozen=True)
class Quirks:
    """How one kind of OpenAI-compatible server behaves, from its documentation and what it was seen
    to answer. ``formats``: the response_format types it honours ("text" is no response_format);
    ``format_error``: status and body for one it does not; ``logprobs``: "full" (with top_logprobs),
    "no_top" (never alternatives), "ignored" (accepted, none returned) or "rejected" (``logprobs_error``)."""

    formats: tuple[str, ...] = ("json_schema", "json_object_schema", "json_object", "text")
    format_error: tuple[int, dict] = (400, {"error": {"message": "Invalid parameter: 'response_format'.",
                                                      "type": "invalid_request_error", "param": "response_format"}})
    logprobs: str = "full"
    logprobs_error: tuple[int, dict] = (400, {"error": {"message": "logprobs is not supported with this model.",
                                                        "param": "logprobs", "code": "unsupported_parameter"}})
    unconstrained: bool = False  # logprobs of the unconstrained distribution: a non-label token is likelier
    usage: bool = True
    content_parts: bool = False  # content as [{"type": "text", "text": ...}]
    reasoning: bool = False  # a reasoning_content field beside the answer
    batch: bool = True  # speaks the Batch API


MODES: dict[str, Quirks] = {
    "openai": Quirks(),
    # o-series reasoning models refuse logprobs, with the parameter named
    "openai_reasoning": Quirks(logprobs="rejected"),
    # Azure OpenAI before api-version 2024-08-01-preview: no json_schema, JSON mode is fine
    "azure": Quirks(formats=("json_object", "text"), format_error=(400, {"error": {
        "code": "BadRequest", "message": "response_format value as json_schema is enabled only for api versions "
                                         "2024-08-01-preview and later"}})),
    # vLLM: guided decoding for both JSON modes, logprobs with up to 20 alternatives, a reasoning parser
    "vllm": Quirks(format_error=(400, {"object": "error", "message": "guided decoding failed", "type":
                                       "BadRequestError", "code": 400}), reasoning=True, batch=False),
    # llama-cpp-python's server: json_schema is a pydantic 500; json_object honours a "schema"
    "llama_cpp_python": Quirks(formats=("json_object_schema", "json_object", "text"), format_error=(500, {
        "error": {"message": "[{'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), 'msg': "
                             "\"Input should be 'text' or 'json_object'\", 'input': 'json_schema'}]",
                  "type": "internal_server_error"}}), unconstrained=True, batch=False),
    # llama.cpp's llama-server: json_schema supported, logprobs with n_probs alternatives
    "llama_server": Quirks(batch=False),
    # Ollama's /v1: structured output yes, logprobs accepted and never returned
    "ollama": Quirks(formats=("json_schema", "json_object", "text"), logprobs="ignored", batch=False),
    # LM Studio: json_schema or text only
    "lmstudio": Quirks(formats=("json_schema", "text"), format_error=(400, {
        "error": "'response_format.type' must be 'json_schema' or 'text'"}), logprobs="ignored", batch=False),
    # LiteLLM's proxy in front of a provider without logprobs (drop_params off)
    "litellm": Quirks(logprobs="rejected", logprobs_error=(400, {"error": {
        "message": "litellm.UnsupportedParamsError: bedrock does not support parameters: ['logprobs', "
                   "'top_logprobs']. To drop these, set `litellm.drop_params=True`", "type": "None", "code": "400"}}),
        batch=False),
    # a gateway that returns content as a list of parts and leaves out usage
    "gateway": Quirks(content_parts=True, usage=False, logprobs="no_top", batch=False),
}


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # the default backlog of 5 drops connections under concurrency
    daemon_threads = True


class FakeOpenAI:
    def __init__(self, *, p_answer: float = 0.9, latency: float = 0.0,
                 decide: Callable[[dict, list[str]], str | None] | None = None, mode: str = "openai",
                 write: Callable[[dict], str | None] | None = None) -> None:
        self.mode = mode
        self.write = write  # free text for a request it answers (alignment's reflection model); None: a verdict
        self.quirks = MODES[mode]
        self.p_answer = p_answer
        self.latency = latency
        self.decide = decide
        self.faults: deque[str] = deque()
        self.requests: list[dict] = []
        self.in_flight = self.max_in_flight = 0  # chat completions being answered at once, and the most seen
        self.timeout_sleep = 3.0
        self.huge_bytes = 3 << 20
        self.drip_models: set[str] = set()
        self.drip_interval = 0.25
        self.drip_seconds = 60.0  # a drip stops (the connection closes) after this long
        self.reject_format = False  # behave like a server without structured output
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.batch_polls = 2  # a batch completes on its second poll
        self.batch_faults: deque[str] = deque()  # faults for the lines of the next completed batch
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reply(self, body: dict, fault: str | None = None) -> tuple[int, dict, dict | None]:
        """(status, payload, headers) for one chat-completions request."""
        if fault == "429":
            return 429, {"error": {"message": "rate limited"}}, {"Retry-After": "0"}
        if fault == "500":
            return 500, {"error": {"message": "upstream exploded"}}, None
        if fault == "reject_format" or (self.reject_format and body.get("response_format")):
            return 400, {"error": {"message": "response_format is not supported"}}, None
        q = self.quirks
        if _format(body) not in q.formats:
            return q.format_error[0], q.format_error[1], None
        if (body.get("logprobs") or body.get("top_logprobs")) and q.logprobs == "rejected":
            return q.logprobs_error[0], q.logprobs_error[1], None
        text = self.write(body) if self.write is not None and not body.get("response_format") else None
        if text is not None:
            return 200, {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
                         "model": body.get("model", "fake"), "choices": [{"index": 0, "finish_reason": "stop",
                                                                         "message": {"role": "assistant", "content": text}}],
                         "usage": {"prompt_tokens": sum(len(str(m["content"]).split()) for m in body["messages"]),
                                   "completion_tokens": len(text.split()), "total_tokens": 0}}, None
        options = _options(body)
        answer = self.decide(body, options) if self.decide else None
        if answer is None:
            last = next((m["content"] for m in reversed(body["messages"]) if m["role"] == "user"), "")
            found = _EXPECT.findall(last)
            answer = found[-1].strip() if found else None
            if answer is None or (options and answer not in options):
                answer = options[0] if options else (answer or "Pass")
        if fault == "invalid_label":
            answer = "Maybe"
        content = json.dumps({"rationale": f"Judged {answer}.", "answer": answer}) \
            if "rationale" in json.dumps(body.get("response_format") or {}) or not body.get("response_format") \
            else json.dumps({"answer": answer})
        if fault == "malformed_json":
            content = '{"answer": "' + answer + '", "rationale": '
        if fault == "length":
            content = content[: len(content) // 2]
        message: dict[str, Any] = {"role": "assistant", "content": content}
        if q.content_parts:
            message["content"] = [{"type": "text", "text": content[:5]}, {"type": "text", "text": content[5:]}]
        if q.reasoning:
            message["reasoning_content"] = "Let me think. The answer might be Maybe, or yes."
        choice: dict[str, Any] = {"index": 0, "finish_reason": "length" if fault == "length" else "stop",
                                  "message": message}
        if body.get("logprobs") and fault != "no_logprobs" and q.logprobs in ("full", "no_top"):
            top = int(body.get("top_logprobs") or 0) if q.logprobs == "full" else 0
            p = self.p_answer(body) if callable(self.p_answer) else self.p_answer
            choice["logprobs"] = {"content": _tokens(content, answer, p, options, top, q.unconstrained)}
        payload = {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
                   "model": body.get("model", "fake"), "choices": [choice]}
        if q.usage:
            payload["usage"] = {"prompt_tokens": sum(len(str(m["content"]).split()) for m in body["messages"]),
                                "completion_tokens": len(content.split()), "total_tokens": 0}
        return 200, payload, None

    # -- the Batch API: files in, a batch that completes after ``batch_polls`` polls, files out ----
    def _upload(self, content_type: str, raw: bytes) -> dict:
        from email.parser import BytesParser

        msg = BytesParser().parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw)
        data = next(part.get_payload(decode=True) for part in msg.walk() if part.get_filename())
        with self._lock:
            file_id = f"file-{len(self.files) + 1}"
            self.files[file_id] = data
        return {"id": file_id, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                "filename": "requests.jsonl", "purpose": "batch", "status": "processed"}

    def _create_batch(self, body: dict) -> dict:
        with self._lock:
            batch_id = f"batch-{len(self.batches) + 1}"
            lines = [json.loads(x) for x in self.files[body["input_file_id"]].splitlines() if x.strip()]
            self.batches[batch_id] = {"id": batch_id, "object": "batch", "endpoint": body["endpoint"],
                                      "input_file_id": body["input_file_id"], "completion_window": "24h",
                                      "status": "validating", "created_at": int(time.time()),
                                      "output_file_id": None, "error_file_id": None, "polls": 0, "lines": lines,
                                      "request_counts": {"total": len(lines), "completed": 0, "failed": 0}}
            return self._public(self.batches[batch_id])

    def _poll_batch(self, batch_id: str) -> dict | None:
        with self._lock:
            batch = self.batches.get(batch_id)
            if batch is None:
                return None
            batch["polls"] += 1
            if batch["status"] != "completed" and batch["polls"] >= self.batch_polls:
                out, err = [], []
                for line in batch["lines"]:
                    status, payload, _ = self.reply(line["body"], self.batch_faults.popleft() if self.batch_faults else None)
                    row = {"id": f"req-{line['custom_id']}", "custom_id": line["custom_id"],
                           "response": {"status_code": status, "body": payload}, "error": None}
                    (out if status == 200 else err).append(json.dumps(row))
                for kind, rows in (("output_file_id", out), ("error_file_id", err)):
                    if rows:
                        file_id = f"file-{len(self.files) + 1}"
                        self.files[file_id] = ("\n".join(rows) + "\n").encode()
                        batch[kind] = file_id
                batch["status"] = "completed"
                batch["request_counts"] = {"total": len(batch["lines"]), "completed": len(out), "failed": len(err)}
            elif batch["status"] == "validating":
                batch["status"] = "in_progress"
            return self._public(batch)

    @staticmethod
    def _public(batch: dict) -> dict:
        return {k: v for k, v in batch.items() if k not in ("polls", "lines")}

    def _next_fault(self) -> str | None:
        with self._lock:
            return self.faults.popleft() if self.faults else None

    def _handler(self):
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as OpenAI and vLLM speak: no connect per call
            disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if self.path.endswith("/files"):
                    if not outer.quirks.batch:
                        return self._send(404, {"detail": "Not Found"})
                    return self._send(200, outer._upload(self.headers.get("Content-Type", ""), raw))
                body = json.loads(raw or b"{}")
                with outer._lock:
                    outer.requests.append({"path": self.path, "body": body, "headers": dict(self.headers)})
                if self.path.endswith("/batches"):
                    if not outer.quirks.batch:
                        return self._send(404, {"detail": "Not Found"})
                    return self._send(200, outer._create_batch(body))
                if not self.path.endswith("/chat/completions"):
                    return self._send(404, {"error": {"message": "not found"}})
                with outer._lock:
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                try:
                    self._chat(body)
                finally:
                    with outer._lock:
                        outer.in_flight -= 1

            def _chat(self, body: dict) -> None:
                if outer.latency:
                    time.sleep(outer.latency)
                fault = outer._next_fault()
                if fault == "html":  # a proxy's error page with status 200
                    return self._send_bytes(200, b"<html><body>Bad gateway</body></html>", "text/html")
                if fault == "timeout":
                    time.sleep(outer.timeout_sleep)
                    return self._send(504, {"error": {"message": "too late"}})
                if fault == "drip" or body.get("model") in outer.drip_models:
                    return self._drip(json.dumps(outer.reply(body)[1]).encode())
                if fault in ("huge", "huge_undeclared", "long_rationale"):
                    status, payload, headers = outer.reply(body)
                    content = json.loads(payload["choices"][0]["message"]["content"])
                    size = 20_000 if fault == "long_rationale" else outer.huge_bytes
                    content["rationale"] = "x" * size
                    payload["choices"][0]["message"]["content"] = json.dumps(content)
                    data = json.dumps(payload).encode()
                    if fault == "huge_undeclared":
                        return self._stream(data)
                    return self._send_bytes(status, data, "application/json", headers)
                auth = self.headers.get("Authorization", "")
                if fault == "echo_auth":  # a 200 whose text quotes the request's credentials back
                    status, payload, headers = outer.reply(body, "invalid_label")
                    payload["choices"][0]["message"]["content"] = f"I cannot answer. You sent Authorization: {auth}"
                    return self._send(status, payload, headers)
                if fault == "echo_auth_rationale":  # a usable answer whose rationale quotes the key
                    status, payload, headers = outer.reply(body)
                    content = json.loads(payload["choices"][0]["message"]["content"])
                    content["rationale"] = f"The header said {auth.split()[-1]}"
                    payload["choices"][0]["message"]["content"] = json.dumps(content)
                    return self._send(status, payload, headers)
                if fault == "echo_auth_error":  # an error body that quotes the key
                    return self._send(500, {"error": {"message": f"bad key {auth.split()[-1]} for this model"}})
                self._send(*outer.reply(body, fault))

            def do_GET(self) -> None:
                parts = self.path.rstrip("/").split("/")
                if len(parts) >= 2 and parts[-2] == "batches":
                    batch = outer._poll_batch(parts[-1])
                    return self._send(200, batch) if batch else self._send(404, {"error": {"message": "no batch"}})
                if len(parts) >= 3 and parts[-1] == "content" and parts[-3] == "files" and parts[-2] in outer.files:
                    return self._send_bytes(200, outer.files[parts[-2]], "application/octet-stream")
                self._send(404, {"error": {"message": "not found"}})

            def _open_stream(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Connection", "close")  # no length: the body ends when the connection does
                self.end_headers()
                self.close_connection = True

            def _stream(self, data: bytes) -> None:
                try:
                    self._open_stream()
                    for i in range(0, len(data), 65536):
                        self.wfile.write(data[i:i + 65536])
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _drip(self, data: bytes) -> None:
                """A valid reply, one byte at a time: every read arrives well within a read timeout."""
                until = time.monotonic() + outer.drip_seconds
                try:
                    self._open_stream()
                    for byte in data:
                        if time.monotonic() > until:
                            return
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(outer.drip_interval)
                except (BrokenPipeError, ConnectionResetError, OSError):
                    pass

            def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
                self._send_bytes(status, json.dumps(payload).encode(), "application/json", headers)

            def _send_bytes(self, status: int, data: bytes, content_type: str, headers: dict | None = None) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler


def _options(body: dict) -> list[str]:
    fmt = body.get("response_format") or {}
    schema = (fmt.get("json_schema") or {}).get("schema") or fmt.get("schema") or {}
    answer = (schema.get("properties") or {}).get("answer") or {}
    found = list(answer.get("enum") or (answer.get("items") or {}).get("enum") or [])
    if found:
        return found
    # no schema (JSON mode or plain text): the options as the prompt spells them out
    last = next((m["content"] for m in reversed(body.get("messages") or []) if m.get("role") == "user"), "")
    m = re.search(r"(?:exactly one of|from): (.+?)\.(?:\n|$)", str(last))
    return [o.strip() for o in m.group(1).split(",")] if m else []


def _format(body: dict) -> str:
    fmt = body.get("response_format")
    if not fmt:
        return "text"
    if fmt.get("type") == "json_object":
        return "json_object_schema" if fmt.get("schema") else "json_object"
    return str(fmt.get("type"))


def _tokens(content: str, answer: str, p: float, options: list[str] | None = None, top: int = 0,
            unconstrained: bool = False) -> list[dict]:
    """Split content into tokens; the answer itself is one token with log-probability log(p). With
    ``top``, each token carries alternatives: at the answer, the other options share 1 - p (and, for a
    server that reports the unconstrained distribution, a non-label "yes" is likelier than any label)."""
    at = content.find('"answer": "') + len('"answer": "')
    pieces = re.findall(r"\w+|\W", content[:at]) + [answer] + re.findall(r"\w+|\W", content[at + len(answer):])
    others = [o for o in options or [] if o != answer]
    out = []
    for t in pieces:
        if t != answer:
            alts = [{"token": t, "logprob": -0.01}] + ([{"token": "\u2581", "logprob": -6.0}] if top > 1 else [])
            out.append({"token": t, "logprob": -0.01, "bytes": None, "top_logprobs": alts[:top]})
            continue
        scale = 0.1 if unconstrained else 1.0  # the labels' share of the unconstrained mass
        alts = [{"token": answer, "logprob": math.log(p * scale)}]
        alts += [{"token": o, "logprob": math.log((1 - p) * scale / len(others))} for o in others]
        if unconstrained:
            alts.insert(0, {"token": "yes", "logprob": math.log(0.9)})
        out.append({"token": t, "logprob": alts[1 if unconstrained else 0]["logprob"], "bytes": None,
                    "top_logprobs": sorted(alts, key=lambda a: -a["logprob"])[:top]})
    return out


if __name__ == "__main__":  # a separate process for benchmarks: python -m tests.fake_openai --latency 0.2
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--latency", type=float, default=0.0)
    args = ap.parse_args()
    with FakeOpenAI(latency=args.latency) as server:
        print(server.url, flush=True)
        threading.Event().wait()
