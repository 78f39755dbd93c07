"""Every call to Label Studio's API (through label-studio-sdk 2.x): nothing outside this package calls it."""
from __future__ import annotations

import json
import logging
from typing import Any, Iterable, Sequence

from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

log = logging.getLogger(__name__)

EXPORT_TIMEOUT = 1800  # one request carries the whole project: about 1.7 s per 1,000 tasks on Label Studio's side


def describe_error(exc: BaseException) -> str:
    """One line for a failed Label Studio call: the status and what Label Studio said, never the
    response headers (the SDK's own message carries them, Set-Cookie session ids included)."""
    import httpx

    if isinstance(exc, ApiError):
        body = exc.body
        detail = body.get("detail") or body.get("validation_errors") or body.get("error") \
            if isinstance(body, dict) else body
        reason = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
                  500: "Internal Server Error"}.get(exc.status_code or 0, "")
        text = f"Label Studio answered {exc.status_code} {reason}".rstrip()
        text = f"{text}: {str(detail)[:200]}" if detail else text
        if exc.status_code == 401:
            text += " (the token was refused: check LABEL_STUDIO_API_KEY / --api-key, from Account & Settings)"
        return text
    where = ""
    try:
        url = exc.request.url  # type: ignore[attr-defined]
        where = f" at {url.scheme}://{url.host}{f':{url.port}' if url.port else ''}"
    except (AttributeError, RuntimeError):  # an error raised before any request was made
        pass
    if isinstance(exc, httpx.ConnectError):
        return f"could not connect to Label Studio{where} (connection refused or host unknown): {exc}"[:300]
    if isinstance(exc, httpx.TimeoutException):
        return f"Label Studio{where} did not answer in time"
    if isinstance(exc, httpx.UnsupportedProtocol):
        return "the Label Studio URL needs a scheme: http://host:port or https://host (LABEL_STUDIO_URL / --url)"
    return f"{type(exc).__name__}: {exc}"[:300]


def is_access_error(exc: BaseException) -> bool:
    """Whether Label Studio refused access to what was asked (no such project, no permission): the
    user's to fix, not a failure of ours."""
    return isinstance(exc, ApiError) and exc.status_code in (401, 403, 404)


def api_status(exc: BaseException) -> int | None:
    """The HTTP status of Label Studio's error answer; None for anything else (a network error, a bug)."""
    return exc.status_code if isinstance(exc, ApiError) else None


def is_labelstudio_error(exc: BaseException) -> bool:
    """An error from Label Studio or from reaching it (an answer with an error status, a network error)."""
    import httpx

    return isinstance(exc, (ApiError, httpx.HTTPError))


class LabelStudioAPI:
    def __init__(self, url: str, api_key: str, *, timeout: float = 60.0) -> None:
        if not url or not api_key:
            raise ValueError("LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY are both needed to reach Label Studio")
        self.url = url.rstrip("/")
        self.client = LabelStudio(base_url=self.url, api_key=api_key, timeout=timeout)

    def whoami(self) -> str:
        """The token's user (one cheap call): raises Label Studio's error for a wrong token or URL."""
        return str(self.client.users.whoami().email or "")

    # -- projects and tasks ----------------------------------------------------------------------
    def create_project(self, title: str, label_config: str, **kwargs: Any) -> int:
        return int(self.client.projects.create(title=title, label_config=label_config, **kwargs).id or 0)

    def find_project(self, title: str) -> int | None:
        for found in self.client.projects.list():  # type: ignore[var-annotated]
            if found.title == title and found.id is not None:
                return int(found.id)
        return None

    def import_tasks(self, project: int, tasks: list[dict]) -> list[int]:
        res = self.client.projects.import_tasks(id=project, request=tasks,  # type: ignore[arg-type]  # dicts validate as the SDK's models
                                                return_task_ids=True)
        return [int(i) for i in (getattr(res, "task_ids", None) or [])]

    def task_ids(self, project: int) -> list[int]:
        return [int(t["id"]) for t in self.project_tasks(project)]

    def tasks(self, project: int) -> Iterable[Any]:
        """Every task as the SDK's objects, paged through /api/tasks (slow: see ``project_tasks``)."""
        return self.client.tasks.list(project=project, fields="all")

    def project_tasks(self, project: int, *, annotated_only: bool = False,
                      with_predictions: bool = False) -> list[dict]:
        """A project's tasks as plain dicts (``id``, ``data``, ``annotations`` and, when asked, ``predictions``
        oldest first) for bulk work.

        They come from Label Studio's JSON export, one request: 1.65 s for 1,000 tasks where paging
        /api/tasks takes 5 s, and the only way to get just the annotated ones (/api/tasks ignores
        ``only_annotated`` on 1.23.2: 10 annotated of 1,000 still pages all 1,000, 4.8 s, against
        0.12 s here). The export lists predictions by id, so they come from one /api/predictions
        listing. Where the export is gone (Enterprise answers 404) /api/tasks is paged instead.
        """
        try:
            raw = b"".join(self.client.projects.exports.download_sync(
                project, export_type="JSON", download_all_tasks=not annotated_only,
                request_options={"timeout": EXPORT_TIMEOUT}))
            tasks: list[dict[str, Any]] = [{"id": int(t["id"]), "data": t.get("data") or {},
                                            "annotations": t.get("annotations") or []}
                     for t in json.loads(raw)]
        except ApiError as exc:
            if exc.status_code != 404:
                raise
            log.info("project %s: no JSON export here (404); paging /api/tasks", project)
            tasks = [{"id": int(t.id), "data": t.data or {},
                      "annotations": [a if isinstance(a, dict) else a.dict() for a in t.annotations or []]}
                     for t in self.tasks(project)]
            tasks = [t for t in tasks if t["annotations"]] if annotated_only else tasks
        if with_predictions:
            by_task: dict[int, list[dict]] = {int(t["id"]): [] for t in tasks}
            for p in sorted(self.predictions(project), key=lambda p: p.id or 0):
                if int(p.task) in by_task:
                    by_task[int(p.task)].append({"id": p.id, "model_version": p.model_version or "",
                                                 "result": p.result or [], "score": p.score})
            for t in tasks:
                t["predictions"] = by_task[int(t["id"])]
        return tasks

    # -- the ML backend connection ---------------------------------------------------------------
    def connect_backend(self, project: int, url: str, *, title: str = "LabelJudge",
                        extra_params: dict | None = None, basic_auth: tuple[str, str] | None = None,
                        is_interactive: bool = False) -> int:
        """Create (or update) the project's connection to the backend; Label Studio calls /health
        and /setup while doing it and registers its own webhook."""
        kwargs: dict[str, Any] = {"project": project, "url": url, "title": title,
                                  "is_interactive": is_interactive, "auto_update": True,
                                  "extra_params": json.dumps(extra_params or {})}
        if basic_auth:
            kwargs.update(auth_method="BASIC_AUTH", basic_auth_user=basic_auth[0],
                          basic_auth_pass=basic_auth[1])
        existing = [b for b in self.client.ml.list(project=project) if b.url.rstrip("/") == url.rstrip("/")]
        if existing:
            return int(self.client.ml.update(id=existing[0].id, **kwargs).id)
        return int(self.client.ml.create(**kwargs).id)

    def set_extra_params(self, project: int, ml_id: int, url: str, extra_params: dict) -> None:
        # Label Studio 1.23.2 answers 500 unless url and project come with the PATCH.
        self.client.ml.update(id=ml_id, project=project, url=url, extra_params=json.dumps(extra_params))

    def backends(self, project: int) -> list[Any]:
        """Label Studio's ML-backend list. Beware: it first re-runs /setup on every backend of the project
        and saves each one whole, which can undo a change of its extra_params made at the same moment.
        Background code reads ``connected_backends`` instead."""
        return list(self.client.ml.list(project=project))

    def connected_backends(self, project: int) -> list[dict]:
        """The project's ML backends as stored (id, title, url, extra_params...), read without side
        effects: Label Studio's ML-backend list and detail calls re-run /setup and save each backend
        whole, and one running beside a PATCH of extra_params put the old ones back (a switch to
        evaluator mode undone)."""
        return self._model_versions(project).get("live") or []

    def _model_versions(self, project: int) -> dict:
        """{"static": [{"model_version", "count", ...}] (versions that have predictions), "live": [backends]}."""
        return self._call("GET", f"api/projects/{int(project)}/model-versions/",
                          params={"extended": "true", "include_live_models": "true"})

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        """A Label Studio endpoint the SDK has no method for, through the SDK's own HTTP client (its
        auth, legacy token or personal access token, and timeouts); the JSON answer, or raises."""
        r = self.client._client_wrapper.httpx_client.request(path, method=method, **kwargs)
        r.raise_for_status()
        return r.json()

    def retrieve_predictions(self, project: int, task_ids: list[int] | None = None) -> None:
        """The Data Manager's "Retrieve predictions" action (goes through /predict): on every task, or
        on ``task_ids``."""
        selected = {"all": True, "excluded": []} if task_ids is None else {"all": False, "included": task_ids}
        self.client.actions.create(id="retrieve_tasks_predictions", project=project, selected_items=selected)

    def label_config(self, project: int) -> str:
        return self.client.projects.get(id=project).label_config or ""

    def import_predictions(self, project: int, predictions: list[dict]) -> None:
        """Write predictions ({"task", "result", "model_version", "score"}) in one request."""
        self.client.projects.import_predictions(id=project, request=predictions)  # type: ignore[arg-type]

    def ensure_user(self, email: str, **fields: str) -> int:
        """The id of the Label Studio user with ``email``, created (without a password: nobody logs in
        as it) when missing; for annotations that come from a dataset rather than a person."""
        for user in self.client.users.list():
            if (user.email or "").lower() == email.lower():
                return int(user.id)
        return int(self.client.users.create(email=email, **fields).id)

    def user_emails(self) -> dict[int, str]:
        """Label Studio user id -> email, to show people rather than numbers (empty if not allowed)."""
        try:
            return {int(u.id): u.email or u.username or str(u.id) for u in self.client.users.list()}
        except ApiError:
            return {}

    def task_predictions(self, task: int) -> list[dict]:
        """One task's predictions, oldest first, as plain dicts."""
        preds = sorted(self.client.predictions.list(task=task), key=lambda p: p.id or 0)
        return [{"id": p.id, "model_version": p.model_version or "", "result": p.result or []} for p in preds]

    def predictions(self, project: int) -> list[Any]:
        return list(self.client.predictions.list(project=project))

    def show_model_version(self, project: int, version: str) -> str:
        """Make ``version`` the project's model version, which the Data Manager's prediction score
        column (and the review queue's order) reads, unless a person chose another model's version
        there. Label Studio refuses a version that neither a connected model's title nor a prediction
        carries, so before anything has predicted it the answer is "pending" (ask again later).
        Returns "shown", "kept" (already shown, or a person's choice) or "pending"."""
        current = self.client.projects.get(id=project).model_version or ""
        if current == version:
            return "kept"
        known = self._model_versions(project)
        titles = {b.get("title") for b in known.get("live") or []}
        if version not in titles and version not in {v.get("model_version") for v in known.get("static") or []}:
            return "pending"
        # Label Studio sets it to a connected model's title; ours are judge-/evaluator- versions
        if current and not current.startswith(("judge-", "evaluator-")) and current not in titles:
            return "kept"
        self.client.projects.update(id=project, model_version=version)
        return "shown"

    REVIEW_VIEW = "Review queue: least confident first"
    # Data Manager columns kept out of the review queue's way; the prediction score and the predicted
    # label (predictions_results) stay visible
    _HIDDEN = ["tasks:inner_id", "tasks:annotations_ids", "tasks:predictions_model_versions", "tasks:file_upload",
               "tasks:storage_filename", "tasks:created_at", "tasks:updated_at", "tasks:updated_by",
               "tasks:avg_lead_time", "tasks:draft_exists", "tasks:cancelled_annotations", "tasks:total_predictions"]

    def ensure_review_view(self, project: int) -> int:
        """A Data Manager tab that sorts tasks by the prediction's score, lowest first, with the score and
        the predicted label shown: the natural review queue (and a basic active-learning loop). One per
        project: an existing tab of that title is updated."""
        data = {"title": self.REVIEW_VIEW, "ordering": ["tasks:predictions_score"], "type": "list",
                "target": "tasks", "hiddenColumns": {"explore": self._HIDDEN, "labeling": self._HIDDEN},
                "filters": {"conjunction": "and", "items": []}}
        return self._upsert_view(project, data)

    def _upsert_view(self, project: int, data: dict) -> int:
        """The project's Data Manager tab titled ``data["title"]``, created or updated to ``data``."""
        views = self._call("GET", "api/dm/views/", params={"project": project})
        mine = [v for v in views if (v.get("data") or {}).get("title") == data["title"]]
        if mine:
            view = self._call("PATCH", f"api/dm/views/{mine[0]['id']}/", json={"project": project, "data": data})
        else:
            view = self._call("POST", "api/dm/views/", json={"project": project, "data": data})
        return int(view["id"])

    QUEUE_VIEW = "LabelJudge: review next"

    def ensure_queue_view(self, project: int, task_ids: Sequence[int]) -> int:
        """A Data Manager tab holding exactly ``task_ids`` (the queue ``labeljudge next`` chose: the
        judge's likely mistakes and the random audits), least confident first, with the score and the
        predicted label shown; Label All Tasks in it labels them. Label Studio has no "id in set"
        filter, so it is one ``id = N`` condition per task under "or". One per project: each new queue
        replaces the tab's tasks."""
        items = [{"filter": "filter:tasks:id", "operator": "equal", "type": "Number", "value": int(t)}
                 for t in task_ids] or [{"filter": "filter:tasks:id", "operator": "equal", "type": "Number", "value": -1}]
        data = {"title": self.QUEUE_VIEW, "ordering": ["tasks:predictions_score"], "type": "list", "target": "tasks",
                "hiddenColumns": {"explore": self._HIDDEN, "labeling": self._HIDDEN},
                "filters": {"conjunction": "or", "items": items}}
        return self._upsert_view(project, data)

    def view_task_ids(self, project: int, view: int) -> list[int]:
        """The ids of the tasks a Data Manager tab shows, in its order (its first 1,000)."""
        page = self._call("GET", "api/tasks/", params={"view": view, "project": project, "page_size": 1000})
        return [int(t["id"]) for t in page.get("tasks", [])]

    def ensure_webhook(self, project: int, url: str, headers: dict[str, str]) -> int:
        """Exactly one webhook of ``project`` at ``url``, carrying our auth header (Label Studio's
        auto-registered one carries none): an existing one is updated, extra copies are removed."""
        same = [h for h in self.client.webhooks.list(project=project) if (h.url or "").rstrip("/") == url.rstrip("/")]
        for extra in same[1:]:
            self.client.webhooks.delete(id=extra.id)
        if same:
            hook = same[0]
            if (hook.headers or {}) != headers or not hook.is_active:
                self.client.webhooks.update(id=hook.id, url=url, headers=headers, is_active=True,
                                            send_payload=True, send_for_all_actions=True)
            return int(hook.id)
        hook = self.client.webhooks.create(url=url, project=project, headers=headers, send_payload=True,
                                           send_for_all_actions=True, is_active=True)
        return int(hook.id)
