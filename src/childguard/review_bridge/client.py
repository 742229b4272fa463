"""A small Label Studio REST client over httpx (legacy token auth).

Why not label-studio-sdk: the SDK 2.x pulls its own pins (and a generated client surface that
changes between releases); we use a dozen endpoints, all stable since 1.x, so plain httpx keeps
the app venv clean and every call visible. Tested against the real 1.23.2 server.

Errors: a connection failure, timeout or 5xx raises `LabelStudioUnavailable` (a
`DependencyError`: retry later); a 4xx raises `LabelStudioError` with the server's message.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from childguard.errors import ChildguardError, DependencyError
from childguard.settings import Settings


class LabelStudioUnavailable(DependencyError):
    """Label Studio is down, slow or answering 5xx: retry later."""


class LabelStudioError(ChildguardError):
    """Label Studio refused a request (4xx): retrying the same request will not help."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(message)


class LabelStudioClient:
    """The endpoints the review bridge uses; one instance per process is fine (thread-safe)."""

    def __init__(self, url: str, token: str, *, timeout: float = 15.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Token {token}", "Accept": "application/json"},
            timeout=httpx.Timeout(timeout, connect=5.0),
            transport=transport,
        )
        self._user_cache: dict[int, str] = {}

    @classmethod
    def from_settings(cls, settings: Settings, *, token: str | None = None) -> LabelStudioClient:
        """Token: argument, else settings.review.label_studio_token, else the credentials file
        written by the lifecycle (`<home>/labelstudio/credentials.json`)."""
        tok = token or settings.review.label_studio_token or _token_from_credentials(settings)
        return cls(settings.review.label_studio_url, tok)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LabelStudioClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing --------------------------------------------------------------------------
    def _request(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self._http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise LabelStudioUnavailable(
                f"Label Studio at {self.url} did not answer {method} {path}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if r.status_code >= 500:
            raise LabelStudioUnavailable(
                f"Label Studio at {self.url} answered {r.status_code} to {method} {path}"
            )
        if r.status_code >= 400:
            raise LabelStudioError(
                r.status_code, f"Label Studio refused {method} {path} ({r.status_code}): "
                f"{r.text[:500]}"
            )
        if r.status_code == 204 or not r.content:
            return None
        try:
            return r.json()
        except ValueError as exc:
            raise LabelStudioUnavailable(
                f"Label Studio at {self.url} sent non-JSON to {method} {path} "
                f"(status {r.status_code})"
            ) from exc

    def health(self) -> bool:
        try:
            r = self._http.get("/health", timeout=3.0)
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    def whoami(self) -> dict[str, Any]:
        return dict(self._request("GET", "/api/current-user/whoami"))

    def user_email(self, user_id: int) -> str:
        if user_id not in self._user_cache:
            try:
                self._user_cache[user_id] = str(
                    self._request("GET", f"/api/users/{user_id}").get("email") or user_id
                )
            except LabelStudioError:
                self._user_cache[user_id] = str(user_id)
        return self._user_cache[user_id]

    # -- projects --------------------------------------------------------------------------
    def find_project(self, title: str) -> dict[str, Any] | None:
        page = 1
        while True:
            data = self._request("GET", "/api/projects", params={"page": page, "page_size": 100,
                                                                   "title": title})
            results = data.get("results", []) if isinstance(data, dict) else data
            for p in results:
                if p.get("title") == title:
                    return dict(p)
            if not isinstance(data, dict) or not data.get("next"):
                return None
            page += 1

    def create_project(self, **fields: Any) -> dict[str, Any]:
        return dict(self._request("POST", "/api/projects", json=fields))

    def update_project(self, project_id: int, **fields: Any) -> dict[str, Any]:
        return dict(self._request("PATCH", f"/api/projects/{project_id}", json=fields))

    def project(self, project_id: int) -> dict[str, Any]:
        return dict(self._request("GET", f"/api/projects/{project_id}"))

    # -- webhooks --------------------------------------------------------------------------
    def list_webhooks(self, project_id: int) -> list[dict[str, Any]]:
        return list(self._request("GET", "/api/webhooks", params={"project": project_id}))

    def create_webhook(self, **fields: Any) -> dict[str, Any]:
        return dict(self._request("POST", "/api/webhooks", json=fields))

    def update_webhook(self, webhook_id: int, **fields: Any) -> dict[str, Any]:
        return dict(self._request("PATCH", f"/api/webhooks/{webhook_id}", json=fields))

    # -- data manager views ----------------------------------------------------------------
    def list_views(self, project_id: int) -> list[dict[str, Any]]:
        return list(self._request("GET", "/api/dm/views", params={"project": project_id}))

    def create_view(self, project_id: int, data: dict[str, Any]) -> dict[str, Any]:
        return dict(self._request("POST", "/api/dm/views", json={"project": project_id,
                                                                  "data": data}))

    def update_view(self, view_id: int, project_id: int, data: dict[str, Any]) -> dict[str, Any]:
        return dict(self._request("PATCH", f"/api/dm/views/{view_id}",
                                  json={"project": project_id, "data": data}))

    # -- tasks -----------------------------------------------------------------------------
    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> dict[str, Any]:
        """Tasks with their predictions, created in one transaction by Label Studio."""
        return dict(self._request("POST", f"/api/projects/{project_id}/import", json=tasks,
                                  params={"commit_to_project": "true"}))

    def find_tasks_by_data(self, project_id: int, field: str, value: str) -> list[dict[str, Any]]:
        """Tasks whose `data[field] == value` (the data manager filter)."""
        query = {"filters": {"conjunction": "and", "items": [{
            "filter": f"filter:tasks:data.{field}", "operator": "equal", "type": "String",
            "value": value,
        }]}}  # fmt: skip
        data = self._request("GET", "/api/tasks", params={
            "project": project_id, "query": json.dumps(query), "fields": "all", "page_size": 100,
        })  # fmt: skip
        tasks = data.get("tasks", []) if isinstance(data, dict) else data
        # the filter is a contains/equal on JSON text; re-check exactly
        return [t for t in tasks if str(t.get("data", {}).get(field)) == value]

    def find_tasks_by_values(self, project_id: int, field: str, values: list[str],
                             *, chunk: int = 50) -> dict[str, list[dict[str, Any]]]:
        """Tasks whose `data[field]` is one of `values` (one request per `chunk` values)."""
        found: dict[str, list[dict[str, Any]]] = {v: [] for v in values}
        for start in range(0, len(values), chunk):
            part = values[start:start + chunk]
            query = {"filters": {"conjunction": "or", "items": [{
                "filter": f"filter:tasks:data.{field}", "operator": "equal", "type": "String",
                "value": v,
            } for v in part]}}  # fmt: skip
            for task in self.iter_tasks(project_id, query=query, page_size=max(100, len(part))):
                key = str((task.get("data") or {}).get(field))
                if key in found:
                    found[key].append(task)
        return found

    def iter_tasks(self, project_id: int, *, page_size: int = 100, fields: str = "all",
                   query: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        page = 1
        while True:
            params: dict[str, Any] = {"project": project_id, "page": page,
                                      "page_size": page_size, "fields": fields}
            if query is not None:
                params["query"] = json.dumps(query)
            try:
                data = self._request("GET", "/api/tasks", params=params)
            except LabelStudioError as exc:
                if exc.status == 404:  # past the last page
                    return
                raise
            tasks = data.get("tasks", []) if isinstance(data, dict) else data
            yield from tasks
            total = data.get("total", 0) if isinstance(data, dict) else len(tasks)
            if len(tasks) < page_size or page * page_size >= total:
                return
            page += 1

    def task(self, task_id: int) -> dict[str, Any]:
        return dict(self._request("GET", f"/api/tasks/{task_id}"))

    def create_prediction(self, task_id: int, prediction: dict[str, Any]) -> dict[str, Any]:
        return dict(self._request("POST", "/api/predictions", json={"task": task_id,
                                                                     **prediction}))

    def task_predictions(self, task_id: int) -> list[dict[str, Any]]:
        return list(self._request("GET", "/api/predictions", params={"task": task_id}))

    # -- annotations -----------------------------------------------------------------------
    def annotations(self, task_id: int) -> list[dict[str, Any]]:
        return list(self._request("GET", f"/api/tasks/{task_id}/annotations"))

    def create_annotation(self, task_id: int, result: list[dict[str, Any]],
                          **fields: Any) -> dict[str, Any]:
        return dict(self._request("POST", f"/api/tasks/{task_id}/annotations",
                                  json={"result": result, **fields}))

    def update_annotation(self, annotation_id: int, result: list[dict[str, Any]]
                          ) -> dict[str, Any]:
        return dict(self._request("PATCH", f"/api/annotations/{annotation_id}",
                                  json={"result": result}))


def _token_from_credentials(settings: Settings) -> str:
    from childguard.review_bridge.lifecycle import CREDENTIALS_FILE

    path = settings.home / "labelstudio" / CREDENTIALS_FILE
    try:
        return str(json.loads(path.read_text())["token"])
    except (FileNotFoundError, KeyError, ValueError) as exc:
        raise DependencyError(
            f"no Label Studio token: set review.label_studio_token (CHILDGUARD_REVIEW__"
            f"LABEL_STUDIO_TOKEN) or start Label Studio with scripts/labelstudio.sh start, "
            f"which writes {path}"
        ) from exc
