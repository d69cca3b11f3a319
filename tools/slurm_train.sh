#!/usr/bin/env bash
# Training on several machines under SLURM: one task per node runs torchrun, which starts one
# process per GPU; the nodes meet through torchrun's c10d rendezvous on the job's first node.
#
#   sbatch --nodes 2 --gpus-per-node 8 tools/slurm_train.sh \
#       --config configs/coco/faster_rcnn_R_50_FPN_3x.yaml [--set ...] [--resume]
#   SCRIPT=tools/eval.py sbatch --nodes 2 --gpus-per-node 8 tools/slurm_train.sh \
#       --config CONFIG --weights output/.../last.pth
#
# Submit from the repository root (the job runs in SLURM_SUBMIT_DIR). Every node must see the
# repository, the datasets and output_dir at the same paths (a shared file system): rank 0 writes
# the outputs, and --resume reads <output_dir>/last.pth on every node. solver.ims_per_batch is
# the global batch: 16 on 2 nodes x 8 GPUs is one image per GPU.
#
# Time limits and pre-emption (docs/long_runs.md): SLURM sends this script SIGUSR1 five minutes
# before the time limit (--signal=B:USR1@300; change it with sbatch --signal=B:USR1@<seconds>).
# The script passes it on as SIGTERM to the job step (srun forwards it to the torchrun agents,
# which forward it to every process); training finishes its step, writes last.pth and exits
# with status 75, and the script requeues the job (scontrol requeue). A requeued job
# (SLURM_RESTART_COUNT > 0) of a training script continues with --resume (--force dropped).
# On pre-emption or scancel SLURM sends SIGTERM itself: the run saves and stops the same way
# (the cluster's PreemptMode decides whether it is requeued). torchrun waits 30 s (its
# --shutdown-timeout) for the step and the checkpoint before it kills its workers.
# Environment: SCRIPT (default tools/train.py), NPROC_PER_NODE (default SLURM_GPUS_ON_NODE,
# else 1), RDZV_PORT (default 29500), PYTHON (default python).
#SBATCH --job-name=resdet
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --output=slurm-%j.out
#SBATCH --signal=B:USR1@300
#SBATCH --requeue
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"

mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")  # no pipe: no SIGPIPE
head_node=${nodes[0]}
nproc=${NPROC_PER_NODE:-${SLURM_GPUS_ON_NODE:-1}}
port=${RDZV_PORT:-29500}
script=${SCRIPT:-tools/train.py}
args=("$@")
if [[ ${SLURM_RESTART_COUNT:-0} -gt 0 && $script == *train.py ]]; then
  kept=()  # a requeued training continues its run
  for arg in ${args[@]+"${args[@]}"}; do
    [[ $arg == --force || $arg == --resume ]] || kept+=("$arg")
  done
  args=(${kept[@]+"${kept[@]}"} --resume)  # (the +-form: empty arrays under set -u, bash 4.2)
fi
echo "slurm_train: $SLURM_NNODES node(s) x $nproc process(es), rendezvous $head_node:$port," \
     "job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0}): $script ${args[*]+${args[*]}}"

requeue=0
stop() {  # $1: the signal this script got; the job step saves and stops on SIGTERM
  echo "slurm_train: SIG$1: asking the job step to save last.pth and stop"
  [[ $1 == USR1 ]] && requeue=1
  kill -TERM "$step" 2>/dev/null || true
}
trap 'stop USR1' USR1
trap 'stop TERM' TERM
srun --ntasks-per-node=1 --kill-on-bad-exit=1 \
  "${PYTHON:-python}" -m torch.distributed.run --nnodes "$SLURM_NNODES" \
  --nproc-per-node "$nproc" --rdzv-backend c10d --rdzv-endpoint "$head_node:$port" \
  --rdzv-id "$SLURM_JOB_ID" "$script" ${args[@]+"${args[@]}"} &
step=$!
while kill -0 "$step" 2>/dev/null; do wait "$step" || true; done  # a trap interrupts wait
status=0
wait "$step" || status=$?
if [[ $requeue == 1 && $status != 0 ]]; then
  echo "slurm_train: requeueing job $SLURM_JOB_ID; it continues from last.pth (--resume)"
  scontrol requeue "$SLURM_JOB_ID"
fi
exit "$status"
