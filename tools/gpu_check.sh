#!/usr/bin/env bash
# GPU check: short mixed-precision training runs of R-50-FPN and R-101-C4 on synthetic data at
# COCO scale (shorter side 800, longer side <= 1333), then the inference / training-step
# benchmark of R-50-FPN side by side with torchvision's FasterRCNN carrying the same weights.
# Prints one summary (with the GPU's name) and keeps the logs and JSON files.
#
#   bash tools/gpu_check.sh                    # on a CUDA machine: under 8 minutes on one H100/H200
#   bash tools/gpu_check.sh --download-wheels  # where pip reaches PyPI: the wheels a bare GPU
#                                              # image lacks, into .whl/ (carry that folder along)
#   GPU_CHECK_TINY=1 PYTHON=.venv/bin/python bash tools/gpu_check.sh   # CPU, tiny sizes: the
#                                              # script's logic end to end in about a minute
#
# Files: work folder $GPU_CHECK_DIR (default /tmp/gpu_check): synthetic data, the two runs,
# bench.json; summary and logs are copied to $OUT when it is set (7 files, none nested).
# Each stage runs under a time limit (R-50-FPN 150 s, R-101-C4 150 s, benchmark 120 s), so the
# whole check ends in time even on a slower GPU; a stage cut short shows as such in the summary.
# Training uses BatchNorm (norm BN, nothing frozen) because no ImageNet weights are fetched:
# from-scratch training, as configs/quickstart.yaml does, at lr 0.01 (half the steps warm-up)
# with gradients clipped at norm 5, so that a short run from random weights stays finite.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
WHEELS=(pycocotools albumentations albucore pydantic pydantic_core annotated-types
        typing-inspection simsimd stringzilla)

if [[ "${1:-}" == "--download-wheels" ]]; then
  # the versions installed here, as cp312 manylinux wheels (the GPU image runs Python 3.12)
  mkdir -p .whl
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
  for name in "${WHEELS[@]}"; do
    version=$("$PY" -c "import importlib.metadata as m; print(m.version('$name'))")
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux_2_24_x86_64 -d .whl \
      "$name==$version"
  done
  ls -la .whl
  exit 0
fi

TINY=${GPU_CHECK_TINY:-0}
WORK=${GPU_CHECK_DIR:-/tmp/gpu_check}
mkdir -p "$WORK"
LOG="$WORK/gpu_check.log"
: > "$LOG"
say() { echo "$*" | tee -a "$LOG"; }

copy_out() {  # keep what came out, also when a stage failed
  [[ -n "${OUT:-}" ]] || return 0
  mkdir -p "$OUT"
  cp -f "$LOG" "$OUT/" 2>/dev/null || true
  for f in summary.txt summary.json bench.json; do
    cp -f "$WORK/$f" "$OUT/" 2>/dev/null || true
  done
  for run in r50_fpn r101_c4; do
    cp -f "$WORK/$run/metrics.jsonl" "$OUT/$run.metrics.jsonl" 2>/dev/null || true
  done
}
trap copy_out EXIT

# ---------------------------------------------------------------------------------- install
rm -rf "$WORK/summary.txt" "$WORK/summary.json" "$WORK/bench.json" "$WORK"/*.rc \
  "$WORK/r50_fpn" "$WORK/r101_c4"
missing_packages() {
  "$PY" - <<'EOF'
import importlib.util
names = ["torch", "torchvision", "cv2", "yaml", "tqdm", "albumentations", "pycocotools",
         "detection", "backbones"]
print(" ".join(n for n in names if importlib.util.find_spec(n) is None))
EOF
}
if ! (cd /tmp && "$PY" -c "import detection, backbones" 2> /dev/null); then
  # torch/torchvision come with the image: install the project alone (no downloads possible)
  "$PY" -m pip install -q --no-deps --no-build-isolation -e . >> "$LOG" 2>&1 \
    || say "pip install -e . failed (see $LOG); using PYTHONPATH=$PWD"
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
missing=$(missing_packages)
if [[ -n "$missing" ]] && ls .whl/*.whl > /dev/null 2>&1; then
  say "installing the carried wheels for: $missing"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/gpu_check_site .whl/*.whl >> "$LOG" 2>&1 \
    || say "installing .whl/*.whl failed (see $LOG)"
  export PYTHONPATH="/tmp/gpu_check_site${PYTHONPATH:+:$PYTHONPATH}"
  missing=$(missing_packages)
fi
if [[ -n "$missing" ]]; then
  say "missing Python packages: $missing"
  say "fetch them with 'bash tools/gpu_check.sh --download-wheels' where pip reaches PyPI,"
  say "then bring the .whl/ folder along (device run: carry ['.whl'])"
  exit 3
fi

# ----------------------------------------------------------------------------------- settings
if [[ "$TINY" == "1" ]]; then
  DEVICE=cpu AMP=false SIZE=96 MAX=128 IMG=96 NTRAIN=8 NVAL=4 BATCH=2 WORKERS=1
  R50_ITERS=4 R101_ITERS=2 LOGP=1 BENCH=(--batch 1 --iters 2 --warmup 0 --size 64) T_TRAIN=300
  T_BENCH=300 BACKBONE_R50=resnet18 BACKBONE_R101=resnet18
  GPU="none (GPU_CHECK_TINY=1: CPU, tiny sizes)"
  EXTRA=(model.rpn.pre_nms_topk_train=200 model.rpn.post_nms_topk_train=100
    model.rpn.pre_nms_topk_test=200 model.rpn.post_nms_topk_test=50
    model.roi_heads.batch_size_per_image=64)
else
  DEVICE=cuda AMP=true SIZE=800 MAX=1333 IMG=512 NTRAIN=200 NVAL=50 BATCH=8 WORKERS=8
  R50_ITERS=${R50_ITERS:-200} R101_ITERS=${R101_ITERS:-100} LOGP=20
  BENCH=(--amp --batch 2 --iters 20 --warmup 3 --size 800) T_TRAIN=150 T_BENCH=120
  BACKBONE_R50=resnet50 BACKBONE_R101=resnet101 EXTRA=()
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
    say "CUDA is not available to $PY: run on a GPU machine (or GPU_CHECK_TINY=1 on the CPU)"
    exit 4; }
  GPU=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
        | head -1 || echo "unknown GPU")
fi
say "GPU: $GPU"
"$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision',
          torchvision.__version__, 'cuda', torch.version.cuda)" | tee -a "$LOG"

R50_CONFIG=configs/coco/faster_rcnn_R_50_FPN_1x.yaml
R101_CONFIG=configs/coco/faster_rcnn_R_101_C4_1x.yaml
TV_CONFIG=configs/coco/faster_rcnn_R_50_FPN_torchvision.yaml  # torchvision's hyperparameters
COMMON=(model.backbone.weights=null model.backbone.norm=BN model.backbone.freeze_at=0
  model.num_classes=null "data.train.images=''" "data.train.annotations=''"
  "data.test.images=''" "data.test.annotations=''" data.synthetic.enabled=true
  "data.synthetic.root=$WORK/shapes" "data.synthetic.num_train=$NTRAIN"
  "data.synthetic.num_val=$NVAL" "data.synthetic.image_size=$IMG"
  "data.input.min_size_train=[$SIZE]" "data.input.max_size_train=$MAX"
  "data.input.min_size_test=$SIZE" "data.input.max_size_test=$MAX" "data.num_workers=$WORKERS"
  "solver.ims_per_batch=$BATCH" solver.base_lr=0.01 "solver.amp=$AMP" solver.amp_dtype=bf16
  solver.clip_grad_norm=5.0 solver.checkpoint_period=1000000 test.eval_period=0
  test.vis_images=2 "log_period=$LOGP"
  "device=$DEVICE" seed=0)
stage() {  # stage NAME SECONDS COMMAND...: run under a time limit, log, never abort the script
  local name=$1 limit=$2; shift 2
  say "== $name (limit ${limit}s): $*"
  set +e
  timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  set -e
  echo "$rc" > "$WORK/$name.rc"
  [[ $rc == 0 ]] || say "== $name ended with status $rc$([[ $rc == 124 ]] && echo ' (time limit)')"
}

solver() {  # solver ITERS: schedule overrides for a short run
  local it=$1
  echo "solver.max_iter=$it" "solver.steps=[$(( it * 3 / 4 ))]" \
       "solver.warmup_iters=$(( it / 2 > 0 ? it / 2 : 1 ))"
}

# shellcheck disable=SC2046  # word splitting of solver's output is wanted
stage r50_fpn "$T_TRAIN" "$PY" tools/train.py --config "$R50_CONFIG" --output "$WORK/r50_fpn" \
  --set "${COMMON[@]}" "model.backbone.name=$BACKBONE_R50" $(solver "$R50_ITERS") \
  "${EXTRA[@]}"
# shellcheck disable=SC2046
stage r101_c4 "$T_TRAIN" "$PY" tools/train.py --config "$R101_CONFIG" \
  --output "$WORK/r101_c4" --set "${COMMON[@]}" \
  "model.backbone.name=$BACKBONE_R101" $(solver "$R101_ITERS") "${EXTRA[@]}"
stage bench "$T_BENCH" "$PY" tools/benchmark.py --config "$TV_CONFIG" --device "$DEVICE" \
  "${BENCH[@]}" --compare-torchvision --output "$WORK/bench.json" \
  --set model.backbone.weights=null "model.backbone.name=$BACKBONE_R50" \
  "data.num_workers=$WORKERS"

# ---------------------------------------------------------------------------------- summary
"$PY" - "$WORK" "$GPU" "$BATCH" "$SIZE" "$AMP" <<'EOF' | tee "$WORK/summary.txt"
import json, statistics, sys
from pathlib import Path

work, gpu, batch, size, amp = Path(sys.argv[1]), *sys.argv[2:3], int(sys.argv[3]), *sys.argv[4:6]
summary = {"gpu": gpu, "batch": batch, "shorter_side": int(size), "amp": amp == "true", "runs": {}}
lines = [f"GPU: {gpu}   AMP bf16: {amp}   synthetic shapes at shorter side {size}",
         f"{'run':<10}{'status':>9}{'iters':>7}{'s/iter':>8}{'img/s':>8}{'mem MB':>8}"
         f"{'loss first->last':>18}{'mAP50':>7}{'mAP':>6}"]
for run, label in (("r50_fpn", "R-50-FPN"), ("r101_c4", "R-101-C4")):
    rc_file = work / f"{run}.rc"
    rc = rc_file.read_text().strip() if rc_file.exists() else "not run"
    status = {"0": "ok", "124": "cut"}.get(rc, f"rc {rc}")
    train, evals = [], []
    metrics = work / run / "metrics.jsonl"
    for line in (metrics.read_text().splitlines() if metrics.exists() else []):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("type") in ("train", "eval"):
            (train if record["type"] == "train" else evals).append(record)
    s_iter = statistics.median(r["time"] for r in train[1:] or train) if train else None
    row = {"status": status, "iterations": train[-1]["iteration"] if train else 0,
           "s_per_iter": s_iter, "images_per_s": batch / s_iter if s_iter else None,
           "memory_mb": max((r.get("memory_mb", 0) for r in train), default=None),
           "loss_first": train[0]["loss"] if train else None,
           "loss_last": train[-1]["loss"] if train else None,
           "mAP50": evals[-1].get("mAP50") if evals else None,
           "mAP": evals[-1].get("mAP") if evals else None}
    summary["runs"][label] = row
    f = lambda v, spec: "-" if v is None else format(v, spec)
    loss = f"{f(row['loss_first'], '.2f')} -> {f(row['loss_last'], '.2f')}"
    lines.append(f"{label:<10}{status:>9}{row['iterations']:>7}{f(s_iter, '.3f'):>8}"
                 f"{f(row['images_per_s'], '.1f'):>8}{f(row['memory_mb'], '.0f'):>8}"
                 f"{loss:>18}{f(row['mAP50'], '.1f'):>7}{f(row['mAP'], '.1f'):>6}")
bench = work / "bench.json"
if bench.exists():
    sys.path.insert(0, ".")
    from detection.benchmarking import format_table
    result = json.loads(bench.read_text())
    summary["benchmark"] = result
    lines += ["", "benchmark, R-50-FPN, random weights: ours vs torchvision (same weights)",
              format_table(result)]
else:
    lines.append("benchmark: no bench.json (see the log)")
print("\n".join(lines))
(work / "summary.json").write_text(json.dumps(summary, indent=1))
EOF
