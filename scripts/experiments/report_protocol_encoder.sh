#!/usr/bin/env bash
# The report protocol of docs/evaluation.md with another probe encoder, without the judge,
# thresholds written to a policy copy (never to the shipped calibration.yaml):
#   0. with TUNE=1: the encoder fine-tuned on train splits only (v2 train, v1 train+dev; alias
#      report, kept per base; TRAIN_LAYERS=N trains its top N blocks instead of the base's
#      default), else read frozen; INT8=1 quantizes it as the service would (in the configured
#      runtime: ONNX Runtime for EmbeddingGemma since 2026-12-07 #6, vectors and probes
#      '+ort-int8x1'; CHILDGUARD_MODELS__TEXT_RUNTIME=torch for torch's)
#   1. calib run (OpenAI train half + v2 calib; probes cross-fitted on the train sets)
#   2. calibrate on it (recall $RECALL, default 0.9; block FPR $BLOCK_FPR, default 0.002 as
#      shipped since 2026-12-07 #5 (0.01 before: scripts/experiments/block_bars.py); gate recall 0.97)
#   3. the report on the test splits (OpenAI test half, XSTest, v1 test, v2 test)
# Each step is skipped when its output file exists (resumable); outputs in $OUT.
#   ENCODER=embeddinggemma-300m bash scripts/experiments/report_protocol_encoder.sh
# (first: .venv/bin/childguard models pull --name embeddinggemma-300m). Measured 2026-12-06:
# 22 min cold on 2 cores, report run 33b36a77 in docs/quality.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
CG=".venv/bin/childguard"
ENCODER=${ENCODER:-embeddinggemma-300m}
OUT=${OUT:-runs/protocol-$ENCODER}
mkdir -p "$OUT"
export CHILDGUARD_MODELS__TEXT_EMBEDDER=$ENCODER CHILDGUARD_MODELS__TUNED_ENCODER=""
[ "${INT8:-0}" = 1 ] && export CHILDGUARD_MODELS__TEXT_EMBEDDER_INT8=true
OWN=evaluation_sets/child_safety_v1.jsonl V2=evaluation_sets/child_safety_v2.jsonl
# V2_TRAIN=<an earlier build of child_safety_v2.jsonl>: fine-tune and train probes on that
# build's train split (its calib and test splits are the current ones), to measure what a new
# train part adds against the same calib items; CALIB_ONLY=1 stops after calibrating
V2_TRAIN=${V2_TRAIN:-$V2}
# step NAME CMD...: run CMD unless $OUT/NAME.json exists; its output lands there only when CMD
# succeeds (a killed step leaves no file, so a rerun repeats it instead of skipping it)
step() {
  local name=$1; shift
  [ -f "$OUT/$name.json" ] && return 0
  "$@" > "$OUT/$name.json.part" && mv "$OUT/$name.json.part" "$OUT/$name.json"
}
if [ "${TUNE:-0}" = 1 ]; then
  step fine-tune $CG eval fine-tune -d "$V2_TRAIN[train]" -d "$OWN[train,dev]" \
    ${TRAIN_LAYERS:+--train-layers "$TRAIN_LAYERS"} --alias report --quiet --json
  export CHILDGUARD_MODELS__TUNED_ENCODER=report
fi
POL="$OUT/policy/child_safety"
if [ ! -d "$POL" ]; then
  mkdir -p "$OUT/policy" && cp -r policies/child_safety "$POL" && rm -f "$POL/calibration.yaml"
fi
TRAIN=(--train-probes openai_moderation_all --train-probes "$OWN[train]" --train-probes "$V2_TRAIN[train]" --cross-fit 5)
step calib $CG eval run -d 'openai_moderation[train]' -d "$V2[calib]" "${TRAIN[@]}" \
  --policy "$POL" --judge none --run-name "${TAG:-$ENCODER}-calib" --quiet --json
CAL=$(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['run_id'])" "$OUT/calib.json")
step calibrate $CG eval calibrate --run "$CAL" --policy "$POL" --recall "${RECALL:-0.9}" \
  --block-fpr "${BLOCK_FPR:-0.002}" --gate-recall 0.97 -c sexual_minors -c grooming -c sextortion -c endangerment \
  --json
[ "${CALIB_ONLY:-0}" = 1 ] && exit 0
step report $CG eval run -d 'openai_moderation_all[test]' -d xstest -d "$OWN[test]" \
  -d "$V2[test]" "${TRAIN[@]}" --policy "$POL" --judge none --run-name "report-${TAG:-$ENCODER}-no-judge" \
  --quiet --json
echo "report: $(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['run_id'])" "$OUT/report.json")"
# 4. with JUDGED=1: the judged row on v2 test + XSTest (the packaged llama.cpp judge; the policy
#    copy's calibration.yaml decides how it is combined; ~45 min of judge calls beside nothing
#    else, replayed from the stage cache when run again)
if [ "${JUDGED:-0}" = 1 ]; then
  step judged $CG eval run -d xstest -d "$V2[test]" "${TRAIN[@]}" --policy "$POL" \
    --run-name "report-${TAG:-$ENCODER}-judged-v2-xstest" --quiet --json
  echo "judged: $(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['run_id'])" "$OUT/judged.json")"
fi
