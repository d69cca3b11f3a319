"""tools/slurm_train.sh: two "nodes" of one process each meet through torchrun's c10d rendezvous
on 127.0.0.1 (gloo); fake ``srun``/``scontrol`` start one task per node as SLURM does."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[2]
SRUN = """#!/usr/bin/env bash
# fake srun: the command once per node (SLURM_NNODES tasks), concurrently; its options dropped;
# SIGTERM forwarded to the tasks, as srun does
while [[ "$1" == --* ]]; do shift; done
pids=()
trap 'kill -TERM "${pids[@]}" 2>/dev/null || true' TERM
for ((node = 0; node < SLURM_NNODES; node++)); do
  SLURM_NODEID=$node SLURM_PROCID=$node "$@" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do
  while kill -0 "$pid" 2>/dev/null; do wait "$pid" || true; done
  wait "$pid" || status=1
done
exit $status
"""
SCONTROL = """#!/usr/bin/env bash
[[ "$1 $2" == "show hostnames" ]] && printf '127.0.0.1\\n127.0.0.2\\n'
[[ "$1" == requeue ]] && echo "$*" >> "$SCONTROL_LOG"
exit 0
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SCRIPT = REPO / "tools" / "slurm_train.sh"  # run from elsewhere: it cds to the submit dir


def _config(folder: Path, data, tiny_config, max_iter: int = 2) -> Path:
    """test_train_eval's tiny R-18-FPN run, shortened to 2 iterations of 2 images (one per node)
    and evaluated at the end only, every detection kept (score 0, 20 per image). GroupNorm: no
    per-process running statistics, so the whole state of the replicas must agree."""
    cfg = yaml.safe_load(tiny_config(folder, data).read_text())
    cfg["model"]["backbone"]["norm"] = "GN"
    cfg["data"]["input"]["min_size_train"] = [64]
    cfg["solver"].update(max_iter=max_iter, steps=[1], warmup_iters=1, checkpoint_period=1000)
    cfg["test"].update(eval_period=0, vis_images=0)
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _slurm_env(folder: Path, **extra: str) -> dict:
    """A fake SLURM job of 2 nodes: ``srun`` and ``scontrol`` in ``folder / "bin"``; requeue
    requests go to ``folder / "scontrol.log"``."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("srun", SRUN), ("scontrol", SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SLURM_NNODES="2",
               SLURM_JOB_NODELIST="node[1-2]", SLURM_JOB_ID="4242", SLURM_SUBMIT_DIR=str(REPO),
               PYTHON=sys.executable, RDZV_PORT=str(_free_port()), OMP_NUM_THREADS="1",
               PYTHONPATH=str(REPO), SCONTROL_LOG=str(folder / "scontrol.log"),
               NO_ALBUMENTATIONS_UPDATE="1", **extra)  # no PyPI version check (2 s offline)
    for name in ("SLURM_GPUS_ON_NODE", "NPROC_PER_NODE", "SLURM_RESTART_COUNT"):
        env.pop(name, None)
    return env


def test_two_nodes_keep_replicas_equal_and_evaluate_once(synthetic_coco, tiny_config, tmp_path):
    config = _config(tmp_path, synthetic_coco, tiny_config)
    env = _slurm_env(tmp_path, SCRIPT="tests/tools/multinode_worker.py")
    proc = subprocess.run(["bash", str(SCRIPT), "--config", str(config)], cwd=tmp_path,
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


def test_usr1_before_the_time_limit_stops_both_ranks_saved_and_the_job_is_requeued(
        synthetic_coco, tiny_config, tmp_path):
    """SIGUSR1 to the batch script (``--signal=B:USR1@300``) once training runs: both ranks
    stop after the same iteration, last.pth holds it, the script requeues the job, and the
    requeued job (same arguments, ``SLURM_RESTART_COUNT=1``) resumes it to the end."""
    config = _config(tmp_path, synthetic_coco, tiny_config, max_iter=4)
    env = _slurm_env(tmp_path)
    out = tmp_path / "out"
    job = subprocess.Popen(["bash", str(SCRIPT), "--config", str(config), "--force"],
                           cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180
    while '"type": "train"' not in _read(out / "metrics.jsonl"):
        assert time.monotonic() < deadline and job.poll() is None, job.communicate()[0]
        time.sleep(0.05)
    job.send_signal(signal.SIGUSR1)
    log = job.communicate(timeout=180)[0]
    assert job.returncode != 0, log
    assert "slurm_train: SIGUSR1: asking the job step to save last.pth and stop" in log
    stops = re.findall(r"(\[rank 1\] )?SIGTERM: stopped after iteration (\d+) of 4", log)
    assert sorted(rank for rank, _ in stops) == ["", "[rank 1] "], log
    k = int(stops[0][1])
    assert stops[1][1] == str(k) and k < 4
    assert torch.load(out / "last.pth", weights_only=True)["iteration"] == k
    assert (tmp_path / "scontrol.log").read_text() == "requeue 4242\n"

    env["SLURM_RESTART_COUNT"] = "1"  # what SLURM sets in the requeued job
    proc = subprocess.run(["bash", str(SCRIPT), "--config", str(config), "--force"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"(restart 1): tools/train.py --config {config} --resume" in proc.stdout
    assert f"resuming from {out / 'last.pth'} at iteration {k}" in proc.stdout
    assert torch.load(out / "last.pth", weights_only=True)["iteration"] == 4
    assert (tmp_path / "scontrol.log").read_text() == "requeue 4242\n"  # not again


def _read(path: Path) -> str:
    return path.read_text() if path.is_file() else ""
