"""`childguard eval ...`: measure the pipeline, compare runs, calibrate thresholds, train probes.

Everything is logged to the MLflow store of the settings (`settings.mlflow_uri`, artifacts in
`settings.mlflow_artifacts_dir`); `mlflow server --backend-store-uri <uri>
--default-artifact-root <dir>` shows the runs. Output names item ids, never item text.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import typer

from childguard.cli.main import get_settings
from childguard.errors import UserError

app = typer.Typer(help="Evaluate the pipeline on labelled sets (MLflow-tracked).",
                  no_args_is_help=True)

_DATASET_HELP = ("built-in set (openai_moderation, xstest, xstest_all), a .jsonl/.csv file "
                 "in the childguard format, or reviewed@latest / reviewed@vN (reviewer "
                 "decisions, `eval snapshot-reviews`); `name[split]` keeps one split; "
                 "repeatable")


def _datasets(refs: list[str], datasets_dir: Path | None, settings: Any = None) -> list[Any]:
    """Load each ref; `reviewed@latest`, `reviewed@vN` (with `[split]`) come from the
    snapshots in the data dir, their text from the restricted store (an audited read)."""
    from childguard.evaluation.datasets import load_dataset

    if not refs:
        raise UserError("give at least one --dataset")
    out = []
    for ref in refs:
        if ref.startswith("reviewed@") or ref == "reviewed":
            if settings is None:
                raise UserError(f"{ref}: this command does not read the reviewed sets")
            out.append(_reviewed(settings, ref))
        else:
            out.append(load_dataset(ref, datasets_dir))
    return out


def _reviewed(settings: Any, ref: str) -> Any:
    import getpass

    from childguard.evaluation.reviewed import ReviewedSets, parse_ref
    from childguard.store.store import Store

    tag, splits = parse_ref(ref)
    store = Store.from_settings(settings)
    try:
        ds, missing = ReviewedSets(settings.reviewed_dir).load(
            tag, store, actor=f"eval:{getpass.getuser()}", splits=splits)
    finally:
        store.close()
    if missing:
        shown = ", ".join(missing[:20]) + (" ..." if len(missing) > 20 else "")
        typer.echo(f"{ds.name}: {len(missing)} of {len(ds)} rows lack content (retention "
                   f"expired, purged, or never retained); they keep their labels and are "
                   f"skipped where text is needed: {shown}", err=True)
    return ds


def _fmt(v: float | None) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.4f}"


@app.command("datasets")
def datasets_cmd(
    ctx: typer.Context,
    datasets_dir: Path | None = typer.Option(None, "--datasets-dir",
                                             help="default: <repo>/../shared/datasets"),
    extra: list[Path] = typer.Option([], "--file", help="also summarise this file"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """List the evaluation sets: sizes, label counts and content hashes (no text)."""
    from childguard.evaluation.datasets import list_datasets

    rows = list_datasets(datasets_dir, extra)
    if json_out:
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        if not r.get("available"):
            typer.echo(f"{r['name']:<20} unavailable: {r.get('reason', '')}")
            continue
        labels = ", ".join(f"{c}: {v['positive']}+/{v['negative']}-"
                           for c, v in r["labels"].items())
        typer.echo(f"{r['name']:<20} {r['items']:>5} items  hash {r['content_hash']}  {labels}")


@app.command("run")
def run_cmd(
    ctx: typer.Context,
    dataset: list[str] = typer.Option([], "--dataset", "-d", help=_DATASET_HELP),
    policy: str | None = typer.Option(None, "--policy", help="policy id or folder"),
    judge: str | None = typer.Option(None, "--judge",
                                     help="judge backend[:model] (llama_cpp, openai, vllm, "
                                          "reference), or 'none' for the cascade without its "
                                          "LLM stage; default: settings"),
    no_gate: bool = typer.Option(False, "--no-gate", help="judge every item (gate off)"),
    no_calibration: bool = typer.Option(False, "--no-calibration",
                                        help="ignore <policy dir>/calibration.yaml"),
    limit: int | None = typer.Option(None, "--limit", help="first N items of each set"),
    stage_timeout: float | None = typer.Option(
        None, "--stage-timeout", help="seconds per pipeline stage (default: settings "
        "serve.stage_timeout_s); raise it on a slow or busy machine"),
    run_name: str | None = typer.Option(None, "--run-name"),
    train_probes: list[str] = typer.Option(
        [], "--train-probes", help="train the probes in the run on this set (repeatable) "
        "instead of loading the saved ones; " + _DATASET_HELP),
    cross_fit: int = typer.Option(
        0, "--cross-fit", help="with --train-probes: score evaluated items that are also "
        "training items out of fold, with K folds (e.g. 5)"),
    no_cache: bool = typer.Option(
        False, "--no-cache", help="compute every stage (default: judge answers and text "
        "embeddings already computed under the same model, settings and prompt are replayed "
        "from <home>/eval_cache)"),
    shard: str | None = typer.Option(
        None, "--shard", help="K/N: only every N-th item from the K-th of each set, to fill "
        "the cache in chunks that each fit a working session (then run without --shard)"),
    datasets_dir: Path | None = typer.Option(None, "--datasets-dir"),
    quiet: bool = typer.Option(False, "--quiet", help="no progress bar"),
    json_out: bool = typer.Option(False, "--json", help="print run id and metrics as JSON"),
) -> None:
    """Run the pipeline over the sets and log params, metrics, plots and predictions."""
    from childguard.evaluation.runner import RunOptions, evaluate

    settings = get_settings(ctx)
    sets = _datasets(dataset, datasets_dir, settings)
    options = RunOptions(judge=judge, gate=not no_gate, calibration=not no_calibration,
                         limit=limit, run_name=run_name, progress=not quiet,
                         stage_timeout_s=stage_timeout,
                         probe_train=tuple(_datasets(train_probes, datasets_dir, settings))
                         if train_probes else (),
                         cross_fit=cross_fit, cache=not no_cache,
                         shard=_parse_shard(shard))
    if cross_fit and not train_probes:
        raise UserError("--cross-fit needs --train-probes (the sets the run trains on)")
    if cross_fit == 1 or cross_fit < 0:
        raise UserError(f"--cross-fit must be 0 (off) or at least 2 folds; received {cross_fit}")
    result = evaluate(settings, sets, policy=policy, options=options)
    if json_out:
        typer.echo(json.dumps({"run_id": result.run_id, "policy_version": result.policy.version,
                               "metrics": result.metrics}, indent=2, sort_keys=True))
        return
    m = result.metrics
    typer.echo(f"run {result.run_id}  policy {result.policy.id}@{result.policy.version}")
    # the run's own set names (a --shard or --limit run names its slices)
    for ds, p in zip(sets, result.params["datasets"].split(","), strict=True):
        skipped = int(result.params.get(f"dataset.{p}.without_text", "0") or 0)
        if skipped:
            typer.echo(f"  {p}: {skipped} of {len(ds)} items have no text and were not "
                       "classified (for a reviewed set: content purged or never retained)")
        typer.echo(f"  {p}: items {int(m.get(f'{p}.items', 0))}  "
                   f"review_rate {_fmt(m.get(f'{p}.review_rate'))}  "
                   f"judge_call_rate {_fmt(m.get(f'{p}.judge_call_rate'))}  "
                   f"p50 {_fmt(m.get(f'{p}.latency_p50_ms'))} ms")
        for code in ds.codes:
            typer.echo(f"    {code}: AUPRC {_fmt(m.get(f'{p}.{code}.auprc'))}  "
                       f"recall {_fmt(m.get(f'{p}.{code}.recall'))}  "
                       f"precision {_fmt(m.get(f'{p}.{code}.precision'))}  "
                       f"FPR {_fmt(m.get(f'{p}.{code}.fpr'))}")
    cached = {k: int(v) for k, v in m.items() if k.startswith("cache.")}
    typer.echo(f"  wall {_fmt(m.get('run_wall_s'))} s"
               + (f"  {'  '.join(f'{k} {v}' for k, v in sorted(cached.items()))}"
                  if cached else ""))


@app.command("compare")
def compare_cmd(
    ctx: typer.Context,
    run_a: str = typer.Argument(..., help="run id or run name (baseline)"),
    run_b: str = typer.Argument(..., help="run id or run name (candidate)"),
    json_out: bool = typer.Option(False, "--json"),
    all_metrics: bool = typer.Option(False, "--all", help="every metric in the table"),
    max_ids: int = typer.Option(50, "--max-ids", help="flipped ids shown in the table"),
) -> None:
    """Metric deltas and the ids whose decision flipped between two runs."""
    from childguard.evaluation import tracking
    from childguard.evaluation.compare import compare_runs, headline

    settings = get_settings(ctx)
    client = tracking.configure(settings)
    cmp = compare_runs(client, run_a, run_b)
    if json_out:
        typer.echo(json.dumps(cmp.to_json(), indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"A = {cmp.run_a}   B = {cmp.run_b}")
    if cmp.params_changed:
        t = Table("param", "A", "B", title="changed parameters")
        for k, (a, b) in cmp.params_changed.items():
            t.add_row(k, str(a), str(b))
        console.print(t)
    t = Table("metric", "A", "B", "B - A", title="metrics")
    for md in headline(cmp.metrics, all_metrics=all_metrics):
        d = md.delta
        t.add_row(md.name, _fmt(md.a), _fmt(md.b),
                  "n/a" if d is None else f"{d:+.4f}")
    console.print(t)
    console.print(f"{len(cmp.flipped)} decisions flipped")
    if cmp.flipped:
        t = Table("dataset", "id", "A", "B", "labels")
        for f in cmp.flipped[:max_ids]:
            t.add_row(f.dataset, f.id, f.a, f.b, json.dumps(f.labels, sort_keys=True))
        console.print(t)
        if len(cmp.flipped) > max_ids:
            console.print(f"... {len(cmp.flipped) - max_ids} more (use --json)")
    if cmp.only_in_a or cmp.only_in_b:
        console.print(f"only in A: {len(cmp.only_in_a)} ids, only in B: {len(cmp.only_in_b)}")


@app.command("table")
def table_cmd(
    ctx: typer.Context,
    runs: list[str] = typer.Argument(None, help="run ids or names, in table order (default: "
                                                "every finished eval run, oldest first, then "
                                                "the records' other runs)"),
    out: Path | None = typer.Option(None, "--out", "-o",
                                    help="write a Markdown document (e.g. docs/quality.md)"),
    records: Path | None = typer.Option(
        None, "--records", help="run records file (e.g. docs/quality_runs.jsonl): runs read "
        "from MLflow are copied into it, runs MLflow does not have are taken from it"),
    readme: Path | None = typer.Option(
        None, "--readme", help="instead of the full table, write the key figures of the given "
        "runs (one column each) into this file's quality-summary block (README.md)"),
) -> None:
    """The quality table (docs/quality.md) from logged eval runs: nothing typed by hand."""
    from childguard.errors import NotFound
    from childguard.evaluation import tracking
    from childguard.evaluation.quality import (
        RunRow,
        find_record,
        quality_table,
        read_records,
        write_records,
    )

    def row(r: Any) -> RunRow:
        return RunRow(run_id=r.info.run_id, name=r.info.run_name or r.info.run_id,
                      params=dict(r.data.params), metrics=dict(r.data.metrics))

    settings = get_settings(ctx)
    client = tracking.configure(settings)
    try:
        kept = read_records(records) if records is not None else []
    except ValueError as exc:
        raise UserError(str(exc)) from exc
    nor_records = f" nor in the records {records}" if records else ""
    rows: list[RunRow] = []
    from_store: list[RunRow] = []
    if runs:
        for ref in runs:
            try:
                rows.append(row(tracking.resolve_run(client, ref)))
                from_store.append(rows[-1])
            except NotFound:
                rec = find_record(kept, ref)
                if rec is None:
                    raise NotFound(f"no run {ref!r} in the MLflow store at "
                                   f"{settings.mlflow_uri}{nor_records}") from None
                rows.append(rec)
    else:
        exp = client.get_experiment_by_name(tracking.EXPERIMENT_EVAL)
        from_store = [] if exp is None else [row(r) for r in client.search_runs(
            [exp.experiment_id], filter_string="attributes.status = 'FINISHED'",
            order_by=["attributes.start_time ASC"], max_results=200)]
        ids = {r.run_id for r in from_store}
        rows = from_store + [r for r in kept if r.run_id not in ids]
    if not rows:
        raise UserError(f"no finished runs in MLflow experiment {tracking.EXPERIMENT_EVAL!r} "
                        f"at {settings.mlflow_uri}{nor_records}; run `childguard eval run` first")
    if records is not None and from_store:
        write_records(records, kept, from_store)
    if readme is not None:
        from childguard.evaluation.quality import replace_readme_block, summary_table

        cmd = "childguard eval table " + " ".join(r.run_id for r in rows)
        cmd += (f" --records {records}" if records else "") + f" --readme {readme}"
        try:
            readme.write_text(replace_readme_block(readme.read_text(encoding="utf-8"),
                                                   summary_table(rows), cmd), encoding="utf-8")
        except (OSError, ValueError) as exc:
            raise UserError(f"{readme}: {exc}") from exc
        typer.echo(f"wrote the quality summary of {len(rows)} runs into {readme}")
        return
    table = quality_table(rows)
    if out is None:
        typer.echo(table, nl=False)
        return
    cmd = "childguard eval table " + " ".join(r.run_id for r in rows)
    cmd += (f" --records {records}" if records else "") + f" -o {out}"
    source = (f"(runs from the MLflow store, or from the records in `{records}`, which keep "
              "the params and metrics of runs logged on other machines)" if records else
              "(from the MLflow store the runs were logged to)")
    out.write_text(
        "# Classification quality on CPU\n\n"
        "Generated from MLflow evaluation runs; do not edit by hand. Regenerate with\n"
        f"`{cmd}`\n{source}.\n\n"
        "Recall = share of violating items flagged (review or block) at the run's thresholds; "
        "FPR = share of non-violating items flagged. OAI = OpenAI moderation dev half "
        "(the split named in the run); v1 / v2 = evaluation_sets/child_safety_v1.jsonl / "
        "child_safety_v2.jsonl (split named in the run); 'violating recall / look-alikes "
        "flagged / look-alikes blocked' = share of the set's violating items flagged for any "
        "category / share of its benign look-alikes flagged / blocked. [a, b] = bootstrap 95% "
        "interval (1,000 resamples of the items). A run that reports a split its probes or "
        "thresholds were fitted on is not a result: report runs train their probes in the run "
        "(cross-fitted) and take thresholds calibrated on train/calib splits only.\n\n"
        + table, encoding="utf-8")
    typer.echo(f"wrote {out} ({len(rows)} runs"
               + (f"; {len(from_store)} recorded in {records}" if records and from_store
                  else "") + ")")


def _parse_shard(raw: str | None) -> tuple[int, int] | None:
    if raw is None:
        return None
    k, sep, n = raw.partition("/")
    try:
        if not sep:
            raise ValueError
        shard = (int(k), int(n))
    except ValueError:
        raise UserError(f"--shard must be K/N, e.g. 2/8; received {raw!r}") from None
    if shard[1] < 1 or not 1 <= shard[0] <= shard[1]:
        raise UserError(f"--shard K/N needs 1 <= K <= N; received {raw!r}")
    return shard


@app.command("calibrate")
def calibrate_cmd(
    ctx: typer.Context,
    run: list[str] = typer.Option([], "--run",
                                  help="calibrate on this eval run's predictions (ideally "
                                       "a --no-gate run); repeatable: the runs' predictions "
                                       "are pooled, and an item in several runs counts once, "
                                       "from the first run that has it"),
    dataset: list[str] = typer.Option([], "--dataset", "-d",
                                      help=_DATASET_HELP + " (runs the pipeline without gate "
                                           "and calibration first)"),
    policy: str | None = typer.Option(None, "--policy", help="policy id or folder"),
    judge: str | None = typer.Option(None, "--judge"),
    limit: int | None = typer.Option(None, "--limit"),
    recall: float = typer.Option(0.98, "--recall", help="target share of violating items "
                                                        "flagged (review or block)"),
    block_fpr: float = typer.Option(0.01, "--block-fpr",
                                    help="largest share of non-violating items blocked"),
    gate_recall: float = typer.Option(0.99, "--gate-recall",
                                      help="share of violating items the gate sends on"),
    review_fpr: float | None = typer.Option(
        None, "--review-fpr", help="review budget: largest share of the calib items that violate "
        "nothing a category may flag; where --recall needs more, the budget wins (the report says "
        "so). Default: none"),
    calib_fraction: float = typer.Option(0.5, "--calib-fraction",
                                         help="share of items (without a split) used to fit"),
    category: list[str] = typer.Option(
        [], "--category", "-c", help="fit only this category code (repeatable); the others "
        "keep the policy thresholds. Default: every category"),
    stacker: bool = typer.Option(
        False, "--stacker", help="also fit the stacker (per category, logistic regression on "
        "the probe's and the judge's logits) on the calib rows, and fit the thresholds on its "
        "scores; the policy then combines with `stacked`"),
    dry_run: bool = typer.Option(False, "--dry-run", help="do not write calibration.yaml"),
    datasets_dir: Path | None = typer.Option(None, "--datasets-dir"),
    quiet: bool = typer.Option(False, "--quiet"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Fit review/block/gate thresholds to targets (split conformal) and write calibration.yaml."""
    import mlflow
    import yaml

    from childguard.evaluation import tracking
    from childguard.evaluation.calibration import (
        Targets,
        calibrate,
        calibration_path,
        write_calibration,
    )
    from childguard.evaluation.compare import load_run
    from childguard.evaluation.runner import RunOptions, evaluate, load_run_policy

    settings = get_settings(ctx)
    try:
        targets = Targets(recall=recall, block_fpr=block_fpr, gate_recall=gate_recall,
                          review_fpr=review_fpr)
    except ValueError as exc:
        raise UserError(f"invalid targets: {exc}") from exc
    if not 0.0 < calib_fraction < 1.0:
        raise UserError(f"--calib-fraction must be in (0, 1); received {calib_fraction}")
    base_policy = load_run_policy(settings, policy, gate=True, calibration=False)
    if run and dataset:
        raise UserError("give either --run or --dataset, not both")
    if run:
        from childguard.evaluation.predictions import pool_predictions

        client = tracking.configure(settings)
        sources, per_run = [], []
        for ref in run:
            rid, _, _, got = load_run(client, ref)
            sources.append(rid)
            per_run.append(got)
        preds = pool_predictions(per_run)
        source_run = ",".join(sources)
    else:
        result = evaluate(settings, _datasets(dataset, datasets_dir, settings), policy=base_policy,
                          options=RunOptions(judge=judge, gate=False, calibration=False,
                                             limit=limit, run_name="calibration-input",
                                             progress=not quiet))
        source_run, preds = str(result.run_id), result.predictions
    weights = None
    if stacker:
        from childguard.evaluation.stacking import fit_stacker, stacked

        weights, stack_report = fit_stacker(preds, category or base_policy.spec.codes,
                                            calib_fraction=calib_fraction)
        preds = stacked(preds, weights)
    cal = calibrate(preds, base_policy, targets, calib_fraction=calib_fraction,
                    source_run=source_run, categories=category or None)
    if weights is not None:
        cal = cal.model_copy(update={"stacker": weights,
                                     "report": {**cal.report, "stacker": stack_report}})
    written: Path | None = None
    if not dry_run:
        written = write_calibration(cal, base_policy.path)
    exp_id = tracking.experiment_id(settings, tracking.EXPERIMENT_CALIBRATION)
    with mlflow.start_run(experiment_id=exp_id, run_name=f"calibrate-{base_policy.id}") as r:
        mlflow.set_tags({"childguard.kind": "calibration", "source_run": source_run,
                         "policy_version": base_policy.version})
        tracking.log_params({"recall_target": recall, "block_fpr_target": block_fpr,
                             "gate_recall_target": gate_recall, "calib_fraction": calib_fraction,
                             "review_fpr_target": review_fpr,
                             "policy_id": base_policy.id, "policy_version": base_policy.version,
                             "categories": ",".join(category) or "all",
                             "written_to": str(written or "")})
        flat: dict[str, float] = {}
        for code, e in cal.report["categories"].items():
            for k, v in e.items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    flat[f"{code}.{k}"] = float(v)
            if spread := e.get("review_spread"):
                flat[f"{code}.review_bar_p05"], flat[f"{code}.review_bar_p95"] = \
                    spread["bar_p05_p95"]
        for k, v in cal.report.get("gate", {}).items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                flat[f"gate.{k}"] = float(v)
        tracking.log_metrics(flat)
        mlflow.log_text(yaml.safe_dump(cal.model_dump(mode="json"), sort_keys=False),
                        "calibration.yaml")
        cal_run = r.info.run_id
    out = {"calibration_run": cal_run, "source_run": source_run,
           "written_to": str(written) if written else None,
           "path": str(calibration_path(base_policy.path)),
           "categories": {k: v.model_dump() for k, v in cal.categories.items()},
           "gate": cal.gate.model_dump() if cal.gate else None, "report": cal.report}
    if json_out:
        typer.echo(json.dumps(out, indent=2, default=str))
        return
    typer.echo(f"calibration run {cal_run} (from eval run {source_run})")
    for code, e in cal.report["categories"].items():
        if code not in cal.categories:
            typer.echo(f"  {code}: kept ({e.get('note', '')})")
            continue
        c = cal.categories[code]
        typer.echo(f"  {code}: review {c.review:.4g} block {c.block:.4g}  "
                   f"guaranteed recall {_fmt(e['guaranteed_recall'])}  "
                   f"holdout recall {_fmt(e['holdout_recall'])}  "
                   f"holdout block FPR {_fmt(e['holdout_block_fpr'])}  "
                   f"holdout flag rate {_fmt(e['holdout_flag_rate'])}"
                   + _spread_text(e.get("review_spread"))
                   + (f"  [{e['note']}]" if e.get("note") else ""))
    g = cal.report.get("gate", {})
    typer.echo(f"  gate: {g}")
    typer.echo(f"written to {written}" if written else "dry run: nothing written")


def _spread_text(spread: dict[str, list[float]] | None) -> str:
    """The review bar's bootstrap spread, as `eval calibrate` prints it beside the bar."""
    if not spread:
        return ""
    (lo, hi), (r_lo, r_hi) = spread["bar_p05_p95"], spread["calib_review_rate_at"]
    return (f"  review bar 90% range {lo:.4g}-{hi:.4g} (flags {_fmt(r_hi)}-{_fmt(r_lo)} of "
            "calib)")


@app.command("fine-tune")
def fine_tune_cmd(
    ctx: typer.Context,
    dataset: list[str] = typer.Option([], "--dataset", "-d", help=_DATASET_HELP),
    alias: str | None = typer.Option(
        None, "--alias", help="point this alias at the new encoder (the pipeline reads the "
        "alias models.tuned_encoder names, 'default' unless configured)"),
    epochs: int = typer.Option(3, "--epochs", min=1, max=20),
    train_layers: int | None = typer.Option(
        None, "--train-layers", min=1, help="train only the top N transformer layers (default: "
        "the base encoder's: all for all-MiniLM-L6-v2, 4 for embeddinggemma-300m)"),
    policy: str | None = typer.Option(None, "--policy", help="policy id or folder (its "
                                      "category codes are the targets)"),
    no_log: bool = typer.Option(False, "--no-log", help="do not log an MLflow run"),
    datasets_dir: Path | None = typer.Option(None, "--datasets-dir"),
    quiet: bool = typer.Option(False, "--quiet"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Fine-tune the text encoder end to end (multi-label head over the policy's categories
    plus the OpenAI set's adult-sexual flag as an auxiliary target) and save it; train the
    probes on it afterwards with train-probes."""
    from childguard.evaluation.encoder_training import train_encoder
    from childguard.evaluation.finetune import FineTuneConfig
    from childguard.evaluation.runner import load_run_policy

    settings = get_settings(ctx)
    if not dataset:
        raise UserError("give at least one --dataset to train on")
    pol = load_run_policy(settings, policy, calibration=False)
    res = train_encoder(settings, _datasets(dataset, datasets_dir, settings), pol.spec.codes,
                        config=FineTuneConfig(epochs=epochs, train_layers=train_layers),
                        alias=alias, log=not no_log,
                        progress=not quiet)
    out = {"version": res.version, "path": str(res.path), "run_id": res.run_id,
           "alias": alias, "items": res.items, "seconds": round(res.seconds, 1),
           "losses": [round(x, 4) for x in res.losses]}
    if json_out:
        typer.echo(json.dumps(out, indent=2))
        return
    typer.echo(f"encoder {res.version} ({res.items} items, {res.seconds:.0f} s) saved to "
               f"{res.path}" + (f", alias {alias}" if alias else "")
               + (f", run {res.run_id}" if res.run_id else ""))


@app.command("train-probes")
def train_probes_cmd(
    ctx: typer.Context,
    dataset: list[str] = typer.Option([], "--dataset", "-d", help=_DATASET_HELP),
    reviews: bool = typer.Option(False, "--reviews",
                                 help="add the train split of the latest reviewed snapshot "
                                      "(same as -d 'reviewed@latest[train]')"),
    alias: str | None = typer.Option(None, "--alias", help="point this alias at the new run"),
    no_save: bool = typer.Option(False, "--no-save",
                                 help="do not write into settings.probes_dir"),
    folds: int = typer.Option(5, "--folds"),
    judge_features: bool = typer.Option(
        False, "--judge-features",
        help="train the probe judge's probes (judge backend llm_probe) on the judge model's "
             "hidden state instead of the text embedder's"),
    datasets_dir: Path | None = typer.Option(None, "--datasets-dir"),
    quiet: bool = typer.Option(False, "--quiet"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Train the embedding probes (cross-validated metrics), save them and log them to MLflow."""
    from childguard.evaluation.probe_training import train_from_datasets

    settings = get_settings(ctx)
    embedder = None
    if judge_features:
        from childguard.models.judge_probe import judge_features_embedder, with_feature_cache

        embedder = judge_features_embedder(with_feature_cache(settings))
    sets = _datasets(dataset, datasets_dir, settings) if dataset else []
    if reviews:
        sets.append(_reviewed(settings, "reviewed@latest[train]"))
    if not sets:
        raise UserError("give at least one --dataset or --reviews")
    tr = train_from_datasets(settings, sets, embedder=embedder, save=not no_save, alias=alias,
                             folds=folds, progress=not quiet)
    out = {"run_id": tr.run_id, "version": tr.probes.version,
           "saved_to": str(tr.saved_to) if tr.saved_to else None,
           "categories": list(tr.probes.categories), "skipped": tr.probes.skipped,
           "metrics": tr.metrics}
    if json_out:
        typer.echo(json.dumps(out, indent=2))
        return
    typer.echo(f"probes {tr.probes.version} run {tr.run_id} saved to {tr.saved_to}")
    for code, m in tr.probes.metrics.items():
        typer.echo(f"  {code}: n {int(m['n'])} positives {int(m['positives'])} "
                   f"AUPRC(cv) {m['auprc_cv']:.4f} AUROC(cv) {m['auroc_cv']:.4f}")
    for code, why in tr.probes.skipped.items():
        typer.echo(f"  {code}: skipped ({why})")


@app.command("snapshot-reviews")
def snapshot_reviews_cmd(
    ctx: typer.Context,
    force: bool = typer.Option(False, "--force",
                               help="write a version even when nothing changed"),
    no_log: bool = typer.Option(False, "--no-log", help="do not log the MLflow run"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Write reviewer decisions as the next version of the `reviewed` evaluation set
    (ids, labels, hashes and the model's verdict; text stays in the restricted store) and log
    it to MLflow (experiment childguard-datasets)."""
    from childguard.evaluation.reviewed import take_snapshot

    settings = get_settings(ctx)
    snap = take_snapshot(settings, force=force, log=not no_log)
    if snap is None:
        msg = {"version": None, "reason": "no decision changed since the latest snapshot"}
        typer.echo(json.dumps(msg) if json_out else
                   "no new or changed decisions since the latest snapshot; nothing written "
                   "(--force writes one anyway)")
        return
    out = {"ref": snap.ref, "version": snap.version, "digest": snap.digest,
           "rows": len(snap.rows), "new": len(snap.new), "changed": len(snap.changed),
           "run_id": snap.run_id, "counts": snap.counts}
    if json_out:
        typer.echo(json.dumps(out, indent=2, sort_keys=True))
        return
    typer.echo(f"{snap.ref}: {len(snap.rows)} rows ({len(snap.new)} new, {len(snap.changed)} "
               f"changed), digest {snap.digest}" + (f", run {snap.run_id}" if snap.run_id else ""))
