"""childguard.review_bridge: uncertain verdicts to human reviewers in Label Studio and back.

Why a bridge and not a plugin: Label Studio runs as its own server (own venv, own database); we
talk to it over its REST API only. The loop is built to lose nothing and double nothing:
store outbox -> `worker.OutboxWorker` (exactly one task per item, backoff while Label Studio is
down) -> reviewer -> webhook (`api.router`) or `reconcile` -> `decisions.DecisionService`
(idempotent; store, audit, signed callback, review-confirmed hash bank).

Modules: `lifecycle` (install/start/stop Label Studio), `client` (REST), `config` (labelling
config from the policy, wellness style, verdict <-> annotation), `project` (`review init`),
`worker`, `api`, `reconcile`, `decisions`, `signing` (secrets, HMAC), `status`, `bridge`
(assembly from settings).
"""
