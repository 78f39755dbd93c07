"""The backend's HTTP API as an OpenAPI 3.0 document, served at /openapi.json.

Why written out: it is the contract a client (Label Studio, a script, a fuzzer) can read, and the
test suite runs schemathesis against it, so every route it lists is exercised with generated bodies
and must never answer a 5xx for a client's mistake.
"""
from __future__ import annotations

from typing import Any

_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
_PROJECT = {"oneOf": [{"type": "integer", "minimum": 1}, {"type": "string", "pattern": r"^\d+(\.\d+)?$"}],
            "description": 'a Label Studio project id, or "<id>.<created_ts>" as Label Studio sends it'}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "the request is malformed; the message names the problem", 401: "authentication required",
            404: "no such thing", 409: "the project is not set up", 413: "request body too large",
            422: "a webhook that cannot be understood (quarantined)", 503: "Label Studio is not configured"}
    return {str(c): {"description": text[c], "content": {"application/json": {"schema": _ERROR}}} for c in codes}


def _ok(description: str, schema: dict | None = None, code: int = 200, media: str = "application/json") -> dict:
    return {str(code): {"description": description,
                        "content": {media: {"schema": schema or {"type": "object"}}}}}


def _body(schema: dict) -> dict:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def openapi_document(version: str) -> dict[str, Any]:
    job = {"type": "object", "properties": {
        "id": {"type": "integer"}, "project_id": {"type": "string"}, "kind": {"type": "string"},
        "status": {"type": "string", "enum": ["queued", "running", "finished", "failed", "cancelled"]},
        "progress": {"type": "object"}, "result": {"type": "object", "nullable": True},
        "error": {"type": "string", "nullable": True}}, "required": ["id", "status"]}
    task = {"type": "object", "properties": {"id": {"type": "integer"}, "data": {"type": "object"}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "LabelJudge ML backend", "version": version,
                 "description": "Label Studio's ML backend contract (/health, /setup, /predict, /webhook) plus "
                                "labeling jobs, reports and metrics. With BASIC_AUTH_USER set, every route but "
                                "/health and /openapi.json needs HTTP Basic auth."},
        "components": {"securitySchemes": {"basic": {"type": "http", "scheme": "basic"}}},
        "paths": {
            "/health": {"get": {"summary": "liveness (no auth)", "responses": _ok("up", {
                "type": "object", "properties": {"status": {"type": "string"}}, "required": ["status"]})}},
            "/setup": {"post": {
                "summary": "parse a project's label config and extra_params; answer the model version",
                "requestBody": _body({"type": "object", "properties": {
                    "project": _PROJECT, "schema": {"type": "string", "description": "the label config XML"},
                    "label_config": {"type": "string"},
                    "extra_params": {"oneOf": [{"type": "object"}, {"type": "string"}], "nullable": True}}}),
                "responses": {**_ok("the version /predict would use now", {
                    "type": "object", "properties": {"model_version": {"type": "string"}},
                    "required": ["model_version"]}), **_errors(400, 401, 413)}}},
            "/predict": {"post": {
                "summary": "predictions for tasks, one entry per task in order ([] is an abstention)",
                "requestBody": _body({"type": "object", "required": ["tasks"], "properties": {
                    "tasks": {"type": "array", "minItems": 1, "items": task}, "project": _PROJECT,
                    "label_config": {"type": "string"}, "params": {"type": "object"}}}),
                "responses": {**_ok("results", {"type": "object", "properties": {
                    "results": {"type": "array"}, "model_version": {"type": "string"}}, "required": ["results"]}),
                    **_errors(400, 401, 409, 413)}}},
            "/webhook": {"post": {
                "summary": "a Label Studio webhook event: stored, then handled in the background",
                "requestBody": _body({"type": "object", "required": ["action"], "properties": {
                    "action": {"type": "string"}, "project": {"type": "object"},
                    "annotation": {"type": "object"}, "task": {"type": "object"},
                    "annotations": {"type": "array"}}}),
                "responses": {**_ok("stored (Start Training: with the queued training job)", {
                    "type": "object", "properties": {"status": {"type": "string"}, "event_id": {"type": "integer"},
                                                     "job": {"type": "integer"}}}, code=201),
                    **_errors(400, 401, 404, 413, 422, 503)}}},
            "/review/{project}": {"get": {
                "summary": "the tasks to review next: likely judge mistakes first, plus recorded random audits",
                "parameters": [
                    {"name": "project", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}},
                    {"name": "n", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                    {"name": "audit_share", "in": "query", "schema": {"type": "number", "minimum": 0, "maximum": 1}},
                    {"name": "seed", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 4294967295}}],
                "responses": {**_ok("the queue", {"type": "object", "properties": {
                    "queue": {"type": "array"},
                    "tab": {"type": "string", "description": "the Data Manager tab holding the queue"}}}),
                              **_errors(400, 401, 404, 503)}}},
            "/report/{project}": {"get": {
                "summary": "accuracy of every model version against the human reference (HTML or JSON)",
                "parameters": [
                    {"name": "project", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}},
                    {"name": "format", "in": "query", "schema": {"type": "string", "enum": ["html", "json"]}},
                    {"name": "ls_url", "in": "query", "schema": {"type": "string", "format": "uri"}}],
                "responses": {**_ok("the report", {"type": "string"}, media="text/html"),
                              **_errors(400, 401, 404, 503)}}},
            "/jobs/label": {"post": {
                "summary": "label a project in the background (one job per project at a time)",
                "requestBody": _body({"type": "object", "required": ["project"], "additionalProperties": False,
                                      "properties": {
                    "project": {"type": "integer", "minimum": 1}, "sample": {"type": "integer", "minimum": 1},
                    "concurrency": {"type": "integer", "minimum": 1, "maximum": 256},
                    "max_cost": {"type": "number", "exclusiveMinimum": True, "minimum": 0},
                    "batch_api": {"type": "boolean"},
                    "poll_interval": {"type": "number", "exclusiveMinimum": True, "minimum": 0, "maximum": 86400},
                    "prompt": {"type": "string"}, "metric": {"type": "string"}, "model": {"type": "string"}}}),
                "responses": {**_ok("the job", job, code=202), **_errors(400, 401, 413, 503)}}},
            "/jobs/align": {"post": {
                "summary": "align the project's judge with its human labels in the background (one job per project)",
                "requestBody": _body({"type": "object", "required": ["project"], "additionalProperties": False,
                                      "properties": {
                    "project": {"type": "integer", "minimum": 1},
                    "holdout_share": {"type": "number", "minimum": 0.05, "maximum": 0.95},
                    "seed": {"type": "integer", "minimum": 0, "maximum": 2147483648},
                    "max_calls": {"type": "integer", "minimum": 1, "maximum": 1000000000},
                    "max_cost": {"type": "number", "minimum": 0.000000001, "maximum": 1000000000},
                    "min_gain": {"type": "number", "minimum": 0, "maximum": 0.99},
                    "target_gain": {"type": "number", "minimum": 0.005, "maximum": 0.99},
                    "promote": {"type": "boolean"}, "dry_run": {"type": "boolean"},
                    "concurrency": {"type": "integer", "minimum": 1, "maximum": 256},
                    "rpm": {"type": "number", "minimum": 0.001, "maximum": 1000000000}}}),
                "responses": {**_ok("the new job", job, code=202), **_ok("the project's running alignment job", job),
                              **_errors(400, 401, 413, 503)}}},
            "/jobs/{job_id}/cancel": {"post": {
                "summary": "stop a running alignment job; it keeps what it scored and promotes nothing unfinished",
                "parameters": [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                "responses": {**_ok("cancel requested", code=202), **_errors(400, 401, 404),
                              "409": {"description": "the job is not running in this process",
                                      "content": {"application/json": {"schema": _ERROR}}}}}},
            "/train": {"post": {
                "summary": "queue a training run of the project's evaluator; says where to watch it",
                "requestBody": _body({"type": "object", "required": ["project"], "properties": {
                    "project": {"oneOf": [_PROJECT, {"type": "object"}]}}}),
                "responses": {**_ok("queued or running", {"type": "object", "properties": {
                    "job": {"type": "integer"}, "status": {"type": "string"}, "message": {"type": "string"},
                    "watch": {"type": "string"}, "report": {"type": "string"}}}, code=201),
                    **_errors(400, 401, 404, 413, 503)}}},
            "/job_status": {"post": {
                "summary": "a job's status, as Label Studio polls it",
                "requestBody": _body({"type": "object", "required": ["job"], "properties": {"job": {"type": "integer"}}}),
                "responses": {**_ok("the job"), **_errors(400, 401, 404, 413)}}},
            "/jobs/{job_id}": {"get": {
                "summary": "one job's status, progress and result",
                "parameters": [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                "responses": {**_ok("the job", job), **_errors(401, 404)}}},
            "/jobs": {"get": {
                "summary": "the latest 100 jobs",
                "parameters": [{"name": "project", "in": "query", "schema": {"type": "integer", "minimum": 1}},
                               {"name": "kind", "in": "query",
                                "schema": {"type": "string", "enum": ["label", "train", "align"]}}],
                "responses": {**_ok("jobs", {"type": "object", "properties": {"jobs": {"type": "array", "items": job}}}),
                              **_errors(400, 401)}}},
            "/versions": {"get": {"summary": "each project's model version", "responses": {**_ok("versions"),
                                                                                          **_errors(401)}}},
            "/metrics": {"get": {"summary": "latency, counters and quarantined records",
                                 "responses": {**_ok("metrics"), **_errors(401)}}},
        },
    }
