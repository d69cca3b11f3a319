"""tools/slurm_train.sh: two "nodes" of one process each meet through torchrun's c10d rendezvous
on 127.0.0.1 (gloo); fake ``srun``/``scontrol`` start one task per node as SLURM does."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[2]
SRUN = """#!/usr/bin/env bash
# fake srun: the command once per node (SLURM_NNODES tasks), concurrently; its options dropped
while [[ "$1" == --* ]]; do shift; done
pids=()
for ((node = 0; node < SLURM_NNODES; node++)); do
  SLURM_NODEID=$node SLURM_PROCID=$node "$@" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
exit $status
"""
SCONTROL = """#!/usr/bin/env bash
[[ "$1 $2" == "show hostnames" ]] && printf '127.0.0.1\\n127.0.0.2\\n'
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(folder: Path, data, tiny_config) -> Path:
    """test_train_eval's tiny R-18-FPN run, shortened to 2 iterations of 2 images (one per node)
    and evaluated at the end only, every detection kept (score 0, 20 per image). GroupNorm: no
    per-process running statistics, so the whole state of the replicas must agree."""
    cfg = yaml.safe_load(tiny_config(folder, data).read_text())
    cfg["model"]["backbone"]["norm"] = "GN"
    cfg["data"]["input"]["min_size_train"] = [64]
    cfg["solver"].update(max_iter=2, steps=[1], warmup_iters=1, checkpoint_period=1000)
    cfg["test"].update(eval_period=0, vis_images=0)
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_two_nodes_keep_replicas_equal_and_evaluate_once(synthetic_coco, tiny_config, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", SRUN), ("scontrol", SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    config = _config(tmp_path, synthetic_coco, tiny_config)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_NNODES="2",
               SLURM_JOB_NODELIST="node[1-2]", SLURM_JOB_ID="4242", SLURM_SUBMIT_DIR=str(REPO),
               SCRIPT="tests/tools/multinode_worker.py", PYTHON=sys.executable,
               RDZV_PORT=str(_free_port()), OMP_NUM_THREADS="1", PYTHONPATH=str(REPO),
               NO_ALBUMENTATIONS_UPDATE="1")  # no PyPI version check (2 s offline)
    env.pop("SLURM_GPUS_ON_NODE", None)
    env.pop("NPROC_PER_NODE", None)
    script = REPO / "tools" / "slurm_train.sh"  # run from elsewhere: it cds to the submit dir
    proc = subprocess.run(["bash", str(script), "--config", str(config)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 node(s) x 1 process(es), rendezvous 127.0.0.1:" in proc.stdout

    out = tmp_path / "out"
    ranks = torch.load(out / "ranks.pt", weights_only=True)
    assert [r["RANK"] for r in ranks] == ["0", "1"]
    assert {r["GROUP_RANK"] for r in ranks} == {"0", "1"}  # one process on each node
    assert {r["SLURM_NODEID"] for r in ranks} == {"0", "1"}
    assert all((r["LOCAL_RANK"], r["LOCAL_WORLD_SIZE"], r["WORLD_SIZE"]) == ("0", "1", "2")
               for r in ranks)
    assert torch.equal(ranks[0]["weights"], ranks[1]["weights"])  # replicas stay equal
    last = torch.load(out / "last.pth", weights_only=True)
    assert last["iteration"] == 2
    saved = torch.cat([v.flatten() for v in last["model"].values() if v.is_floating_point()])
    assert torch.equal(saved, ranks[0]["weights"])
    # one evaluation, on every process the same result, over both shards of the 8 val images
    assert json.dumps(ranks[0]["result"]) == json.dumps(ranks[1]["result"])  # nan == nan
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if r["type"] == "eval"] == [2]
    assert [r["iteration"] for r in records if r["type"] == "train"] == [1, 2]
    detections = json.loads((out / "coco_results.json").read_text())
    per_image = {}
    for d in detections:
        per_image[d["image_id"]] = per_image.get(d["image_id"], 0) + 1
    val = json.loads(Path(synthetic_coco.val_annotations).read_text())
    assert per_image == {im["id"]: 20 for im in val["images"]}  # each image once, not twice
