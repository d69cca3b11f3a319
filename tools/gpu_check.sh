#!/usr/bin/env bash
# GPU check: short mixed-precision training runs of R-50-FPN and R-101-C4 on synthetic data at
# COCO scale (shorter side 800, longer side <= 1333), then the inference / training-step
# benchmark of R-50-FPN side by side with torchvision's FasterRCNN carrying the same weights.
# Prints one summary (with the GPU's name) and keeps the logs and JSON files.
#
#   bash tools/gpu_check.sh                    # on a CUDA machine: under 8 minutes on one H100/H200
#   bash tools/gpu_check.sh --download-wheels  # where pip reaches PyPI: the wheels a bare GPU
#                                              # image lacks, into .whl/ (carry that folder along)
#   bash tools/gpu_check.sh --list-wheels      # what --download-wheels fetches: the requirements
#                                              # minus the image, pinned as here (tools/gpu/wheels.py)
#   GPU_CHECK_TINY=1 PYTHON=.venv/bin/python bash tools/gpu_check.sh   # CPU, tiny sizes: the
#                                              # script's logic end to end in about a minute
#
# Files: work folder $GPU_CHECK_DIR (default /tmp/gpu_check): synthetic data, the two runs,
# bench.json; summary and logs are copied to $OUT when it is set (7 files, none nested).
# Each stage runs under a time limit (R-50-FPN 150 s, R-101-C4 150 s, benchmark 120 s), so the
# whole check ends in time even on a slower GPU; a stage cut short shows as such in the summary.
# The runs are the shipped configs configs/coco/faster_rcnn_{R_50_FPN,R_101_C4}_1x.yaml through
# configs/gpu_check/*_short.yaml, whose one overlay (short_synthetic.yaml) lists each change a
# short run on a bare GPU box needs and why (from scratch with BatchNorm, synthetic data, 200 /
# 100 iterations, AMP bf16).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

if [[ "${1:-}" == "--download-wheels" || "${1:-}" == "--list-wheels" ]]; then
  # what to carry: the project's requirements and their dependencies minus what the image has,
  # pinned to the versions installed here (tools/gpu/wheels.py); a requirement that is neither
  # stops this step, here, not the check on the GPU box
  cfg_args=(${GPU_CHECK_SETUP_CFG:+--setup-cfg "$GPU_CHECK_SETUP_CFG"})
  if ! pins=$("$PY" tools/gpu/wheels.py "${cfg_args[@]}"); then
    echo "gpu_check: cannot derive the wheels to carry (see above)" >&2
    exit 3
  fi
  mapfile -t WHEELS <<< "$pins"
  if [[ "$1" == "--list-wheels" ]]; then
    printf '%s\n' "${WHEELS[@]}"
    exit 0
  fi
  # as cp312 manylinux wheels (the GPU image runs Python 3.12)
  mkdir -p .whl  # ignored by .gitignore
  for pin in "${WHEELS[@]}"; do
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
      --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 --platform manylinux_2_24_x86_64 -d .whl "$pin" || {
        echo "gpu_check: no cp312 manylinux wheel of $pin" >&2; exit 3; }
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
R50_CONFIG=configs/gpu_check/faster_rcnn_R_50_FPN_1x_short.yaml
R101_CONFIG=configs/gpu_check/faster_rcnn_R_101_C4_1x_short.yaml
TV_CONFIG=configs/coco/faster_rcnn_R_50_FPN_torchvision.yaml  # torchvision's hyperparameters
SET=("data.synthetic.root=$WORK/shapes")
if [[ "$TINY" == "1" ]]; then  # the same configs, shrunk to run on a CPU in about a minute
  DEVICE=cpu T_TRAIN=300 T_BENCH=300 BENCH=(--batch 1 --iters 2 --warmup 0 --size 64)
  BACKBONE=(model.backbone.name=resnet18)
  SET+=(device=cpu solver.amp=false data.synthetic.num_train=8 data.synthetic.num_val=4
    data.synthetic.image_size=96 "data.input.min_size_train=[96]" data.input.max_size_train=128
    data.input.min_size_test=96 data.input.max_size_test=128 data.num_workers=1
    solver.ims_per_batch=2 solver.max_iter=4 "solver.steps=[3]" solver.warmup_iters=2
    log_period=1 model.rpn.pre_nms_topk_train=200 model.rpn.post_nms_topk_train=100
    model.rpn.pre_nms_topk_test=200 model.rpn.post_nms_topk_test=50
    model.roi_heads.batch_size_per_image=64 "${BACKBONE[@]}")
  GPU="none (GPU_CHECK_TINY=1: CPU, tiny sizes, ResNet-18)"
else
  DEVICE=cuda T_TRAIN=150 T_BENCH=120 BENCH=(--amp --batch 2 --iters 20 --warmup 3 --size 800)
  BACKBONE=()
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
    say "CUDA is not available to $PY: run on a GPU machine (or GPU_CHECK_TINY=1 on the CPU)"
    exit 4; }
  GPU=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
        | head -1 || echo "unknown GPU")
fi
say "GPU: $GPU"
"$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision',
          torchvision.__version__, 'cuda', torch.version.cuda)" | tee -a "$LOG"

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

stage r50_fpn "$T_TRAIN" "$PY" tools/train.py --config "$R50_CONFIG" --output "$WORK/r50_fpn" \
  --set "${SET[@]}"
stage r101_c4 "$T_TRAIN" "$PY" tools/train.py --config "$R101_CONFIG" \
  --output "$WORK/r101_c4" --set "${SET[@]}"
stage bench "$T_BENCH" "$PY" tools/benchmark.py --config "$TV_CONFIG" --device "$DEVICE" \
  --task model train "${BENCH[@]}" --compare-torchvision --output "$WORK/bench.json" \
  --set model.backbone.weights=null "${BACKBONE[@]}"

# ---------------------------------------------------------------------------------- summary
"$PY" - "$WORK" "$GPU" <<'EOF' | tee "$WORK/summary.txt"
import json, statistics, sys
from pathlib import Path

sys.path.insert(0, ".")
from detection.benchmark import format_report
from detection.config import load_config
from detection.engine.runlog import read_metrics

work, gpu = Path(sys.argv[1]), sys.argv[2]
summary = {"gpu": gpu, "runs": {}}
lines = [f"GPU: {gpu}", f"{'run':<24}{'status':>7}{'iters':>6}{'s/iter':>8}{'img/s':>7}"
         f"{'mem MB':>8}{'loss first->last':>18}{'mAP50':>7}{'mAP':>6}"]
fmt = lambda v, spec: "-" if v is None else format(v, spec)
for run in ("r50_fpn", "r101_c4"):
    rc_file = work / f"{run}.rc"
    rc = rc_file.read_text().strip() if rc_file.exists() else "not run"
    status = {"0": "ok", "124": "cut"}.get(rc, f"rc {rc}")
    try:
        metrics, cfg = read_metrics(work / run), load_config(work / run / "config.yaml")
    except (OSError, ValueError):
        lines.append(f"{run:<24}{status:>7}  (no metrics)")
        continue
    train, evals = metrics["train"], metrics["eval"]
    m, batch = cfg.model, cfg.solver.ims_per_batch
    label = f"{m.backbone.name} {m.roi_heads.box_head} b{batch}"  # what really ran
    s_iter = statistics.median(r["time"] for r in train[1:] or train) if train else None
    row = {"config": label, "status": status,
           "iterations": train[-1]["iteration"] if train else 0, "s_per_iter": s_iter,
           "images_per_s": batch / s_iter if s_iter else None,
           "memory_mb": max((r.get("memory_mb", 0) for r in train), default=None),
           "loss_first": train[0]["loss"] if train else None,
           "loss_last": train[-1]["loss"] if train else None,
           "mAP50": evals[-1].get("mAP50") if evals else None,
           "mAP": evals[-1].get("mAP") if evals else None}
    summary["runs"][run] = row
    loss = f"{fmt(row['loss_first'], '.2f')} -> {fmt(row['loss_last'], '.2f')}"
    lines.append(f"{label:<24}{status:>7}{row['iterations']:>6}{fmt(s_iter, '.3f'):>8}"
                 f"{fmt(row['images_per_s'], '.1f'):>7}{fmt(row['memory_mb'], '.0f'):>8}"
                 f"{loss:>18}{fmt(row['mAP50'], '.1f'):>7}{fmt(row['mAP'], '.1f'):>6}")
bench = work / "bench.json"
if bench.exists():
    result = json.loads(bench.read_text())
    summary["benchmark"] = result
    lines += ["", "benchmark: ours vs torchvision (same weights)", format_report(result)]
else:
    lines.append("benchmark: no bench.json (see the log)")
print("\n".join(lines))
(work / "summary.json").write_text(json.dumps(summary, indent=1))
EOF
