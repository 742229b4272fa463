"""The review bridge assembled from settings: one object the CLI, the API and tests share.

It owns the Label Studio client, the policy, the secrets, the decision service and (lazily) the
project id and the hash service, so each caller does not wire them differently.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from childguard.policy import Policy, load_policy, resolve_policy_path
from childguard.review_bridge.client import LabelStudioClient
from childguard.review_bridge.decisions import CallbackNotifier, DecisionService
from childguard.review_bridge.ports import ReviewStore
from childguard.review_bridge.project import ProjectState, ensure_project, find_project_id
from childguard.review_bridge.reconcile import ReconcileReport, reconcile
from childguard.review_bridge.signing import ReviewSecrets
from childguard.review_bridge.worker import OutboxWorker, WorkerMetrics
from childguard.settings import Settings

RECONCILE_MARGIN = timedelta(minutes=5)


@dataclass
class ReviewBridge:
    settings: Settings
    store: ReviewStore
    client: LabelStudioClient
    policy: Policy
    secrets: ReviewSecrets
    decisions: DecisionService
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)
    _project_id: int | None = None
    _last_reconcile: datetime | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_settings(cls, settings: Settings, store: ReviewStore, *,
                      client: LabelStudioClient | None = None, policy: Policy | None = None,
                      hash_service: Any = None, metrics: WorkerMetrics | None = None
                      ) -> ReviewBridge:
        """`hash_service`: a HashService, a zero-argument factory, or None for the default
        (built from settings on the store's engine at the first confirmed block)."""
        policy = policy or load_policy(resolve_policy_path(settings.policy, settings.policies_dir))
        secrets = ReviewSecrets.from_settings(settings)
        client = client or LabelStudioClient.from_settings(settings)
        if hash_service is None:
            def factory() -> Any:
                from childguard.hashing.service import HashService

                return HashService.from_settings(settings, store.engine)  # type: ignore[attr-defined]
        elif callable(hash_service) and not hasattr(hash_service, "add_bytes"):
            factory = hash_service
        else:
            def factory() -> Any:
                return hash_service
        decisions = DecisionService(
            store=store, policy=policy, notifier=CallbackNotifier(secrets.callback_key),
            hash_service=factory, reviewer_name=client.user_email,
        )
        return cls(settings, store, client, policy, secrets, decisions,
                   metrics or WorkerMetrics())

    # -- project -------------------------------------------------------------------------
    def init_project(self) -> ProjectState:
        state = ensure_project(
            self.client, self.policy, title=self.settings.review.project_title,
            public_url=self.settings.review.public_url,
            webhook_secret=self.secrets.webhook_secret,
        )
        self._project_id = state.project_id
        return state

    @property
    def project_id(self) -> int:
        with self._lock:
            if self._project_id is None:
                self._project_id = find_project_id(self.client,
                                                   self.settings.review.project_title)
            return self._project_id

    # -- work ----------------------------------------------------------------------------
    def worker(self) -> OutboxWorker:
        return OutboxWorker(self.store, self.client, self.policy, self.settings.review,
                            project_id=self.project_id, media_key=self.secrets.media_key,
                            metrics=self.metrics)

    def reconcile(self, *, full: bool = False) -> ReconcileReport:
        """Pull missed annotations. After a first full pass, only tasks updated since the last
        pass started (minus a margin for clock skew and in-flight requests) are read."""
        started = datetime.now(UTC)
        since = None
        if not full and self._last_reconcile is not None:
            since = self._last_reconcile - RECONCILE_MARGIN
        report = reconcile(self.client, self.project_id, self.decisions, since=since)
        self._last_reconcile = started
        return report

    def close(self) -> None:
        self.client.close()
