"""MLflow plumbing: where runs go, how datasets and policy prompts are logged, how runs are read.

Why a module of its own: every command that logs (eval run, calibrate, train-probes) must use
the same store (settings.mlflow_uri, a SQLite file by default) and the same artifact folder
(settings.mlflow_artifacts_dir), or `mlflow server --backend-store-uri <uri>
--default-artifact-root <dir>` would show runs whose plots it cannot open. Experiments are
created with an explicit artifact location under that folder, so runs logged here are readable
by the server whatever its own default is.

Nothing here logs item text: datasets are logged as ids + labels + split with our content hash
as the MLflow digest; predictions are ids and numbers.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from childguard.errors import DependencyError, NotFound, UserError

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from childguard.evaluation.datasets import EvalDataset
    from childguard.policy import Policy
    from childguard.settings import Settings

EXPERIMENT_EVAL = "childguard-eval"
EXPERIMENT_CALIBRATION = "childguard-calibration"
EXPERIMENT_PROBES = "childguard-probes"

#: MLflow caps a param value at 6000 characters
_PARAM_MAX = 6000
#: what MLflow allows in a param or metric name: alphanumerics, `_ - . : /` and space
_KEY_BAD = re.compile(r"[^A-Za-z0-9_\-. :/]")


def configure(settings: Settings) -> MlflowClient:
    """Point MLflow (tracking and prompt registry) at the settings' store; create folders."""
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = settings.mlflow_uri
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    settings.mlflow_artifacts_dir.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def experiment_id(settings: Settings, name: str) -> str:
    """The id of experiment `name`, created with its artifacts under mlflow_artifacts_dir."""
    client = configure(settings)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    location = (settings.mlflow_artifacts_dir / name).resolve()
    location.mkdir(parents=True, exist_ok=True)
    return str(client.create_experiment(name, artifact_location=location.as_uri()))


def mlflow_key(key: str) -> str:
    """`key` with every character MLflow rejects in a param/metric name replaced by `_` (a set
    named after a file such as `my set (v2).jsonl` must not abort a run at its first log call)."""
    return _KEY_BAD.sub("_", key)


def log_params(params: Mapping[str, Any]) -> None:
    import mlflow

    clean = {mlflow_key(k): (str(v)[:_PARAM_MAX] if v is not None else "")
             for k, v in params.items()}
    mlflow.log_params(clean)


def log_metrics(metrics: Mapping[str, float]) -> None:
    import mlflow

    mlflow.log_metrics({mlflow_key(k): float(v) for k, v in metrics.items()
                        if v is not None and math.isfinite(float(v))})


def log_json(obj: Any, artifact_file: str) -> None:
    import mlflow

    mlflow.log_text(json.dumps(obj, indent=2, sort_keys=True, default=str), artifact_file)


def dataset_frame(ds: EvalDataset) -> Any:
    """ids, split and one label column per code (-1 = unknown); no text."""
    import pandas as pd

    codes = ds.codes
    rows = [{"id": it.id, "split": it.split or "",
             **{f"label_{c}": int(it.labels.get(c, -1)) for c in codes}} for it in ds.items]
    return pd.DataFrame(rows, columns=["id", "split", *[f"label_{c}" for c in codes]])


def log_dataset(ds: EvalDataset, context: str = "evaluation") -> None:
    """Log the set as an MLflow dataset input: ids + labels, digest = our content hash."""
    import mlflow
    from mlflow.data.pandas_dataset import from_pandas

    df = dataset_frame(ds)
    targets = f"label_{ds.codes[0]}" if ds.codes else None
    with warnings.catch_warnings():
        # the local path is ambiguous between two equivalent source types; the schema hint
        # about integer columns does not apply (labels are never missing: -1 means unknown)
        warnings.simplefilter("ignore", UserWarning)
        dataset = from_pandas(df, source=ds.source, name=ds.name, digest=ds.content_hash,
                              targets=targets)
        mlflow.log_input(dataset, context=context)


def prompt_name(policy: Policy) -> str:
    return f"childguard-{policy.id}".replace("_", "-")


def register_policy_prompt(policy: Policy) -> str:
    """Register the policy prompt (rendered static part + item template) in the MLflow prompt
    registry, once per policy version (alias `v<version>`). Returns `prompts:/<name>/<n>`."""
    import mlflow

    base_version = policy.version.split("+", 1)[0]
    name = prompt_name(policy)
    alias = f"v{base_version}"
    from mlflow.exceptions import MlflowException

    try:
        existing = mlflow.genai.load_prompt(f"prompts:/{name}@{alias}", allow_missing=True)
    except MlflowException:  # the prompt name itself is not registered yet
        existing = None
    if existing is not None:
        return f"prompts:/{name}/{existing.version}"
    from childguard.policy import ITEM_SEPARATOR

    template = f"{policy.render_system()}{ITEM_SEPARATOR}\n{policy.item_template.strip()}\n"
    pv = mlflow.genai.register_prompt(
        name=name,
        template=template,
        commit_message=f"{policy.id} {base_version}: {policy.spec.version_note}"[:500],
        tags={"policy_id": policy.id, "policy_version": base_version},
    )
    mlflow.genai.set_prompt_alias(name, alias=alias, version=pv.version)
    return f"prompts:/{name}/{pv.version}"


# -- reading runs back ---------------------------------------------------------------------------


def resolve_run(client: MlflowClient, ref: str, experiment: str = EXPERIMENT_EVAL) -> Any:
    """A run by id, or by run name within `experiment` (the newest one with that name)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(ref)
    except MlflowException:
        pass
    exp = client.get_experiment_by_name(experiment)
    if exp is not None:
        runs = client.search_runs([exp.experiment_id],
                                  filter_string=f"attributes.run_name = '{ref}'",
                                  order_by=["attributes.start_time DESC"], max_results=1)
        if runs:
            return runs[0]
    raise NotFound(f"no MLflow run {ref!r} (neither a run id nor a run name in experiment "
                   f"{experiment!r})")


def download(client: MlflowClient, run_id: str, artifact_path: str, dst: Path | None = None
             ) -> Path:
    """Download an artifact (file or folder) of a run to `dst` (a temporary folder by default)."""
    from mlflow.exceptions import MlflowException

    dst = dst or Path(tempfile.mkdtemp(prefix="childguard-mlflow-"))
    dst.mkdir(parents=True, exist_ok=True)
    try:
        return Path(client.download_artifacts(run_id, artifact_path, str(dst)))
    except (MlflowException, OSError) as exc:
        raise NotFound(f"run {run_id} has no artifact {artifact_path!r}: {exc}") from exc


def require_mlflow() -> None:
    try:
        import mlflow  # noqa: F401
    except ImportError as exc:  # pragma: no cover - mlflow is a core dependency
        raise DependencyError("mlflow is not installed; install childguard's dependencies") from exc


def check_uri(settings: Settings) -> None:
    if not settings.mlflow_uri:
        raise UserError("settings.mlflow_uri is empty; set CHILDGUARD_MLFLOW_TRACKING_URI")
