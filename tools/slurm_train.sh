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
# Environment: SCRIPT (default tools/train.py), NPROC_PER_NODE (default SLURM_GPUS_ON_NODE,
# else 1), RDZV_PORT (default 29500), PYTHON (default python).
#SBATCH --job-name=resdet
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --output=slurm-%j.out
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"

mapfile -t nodes < <(scontrol show hostnames "$SLURM_JOB_NODELIST")  # no pipe: no SIGPIPE
head_node=${nodes[0]}
nproc=${NPROC_PER_NODE:-${SLURM_GPUS_ON_NODE:-1}}
port=${RDZV_PORT:-29500}
script=${SCRIPT:-tools/train.py}
echo "slurm_train: $SLURM_NNODES node(s) x $nproc process(es), rendezvous $head_node:$port," \
     "job $SLURM_JOB_ID: $script $*"
srun --ntasks-per-node=1 --kill-on-bad-exit=1 \
  "${PYTHON:-python}" -m torch.distributed.run --nnodes "$SLURM_NNODES" \
  --nproc-per-node "$nproc" --rdzv-backend c10d --rdzv-endpoint "$head_node:$port" \
  --rdzv-id "$SLURM_JOB_ID" "$script" "$@"
