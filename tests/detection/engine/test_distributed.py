"""Two CPU processes (gloo) train the toy detector through Trainer's DistributedDataParallel."""
import json
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from detection.engine import distributed as du
from detection.engine.checkpoint import load_checkpoint, seed_all
from detection.engine.runlog import MetricsWriter
from detection.engine.schedule import WarmupLRScheduler, param_groups
from detection.data.loader import move_batch
from detection.engine.hooks import standard_hooks
from detection.engine.trainer import Trainer
from detection.evaluation.inference import inference_on_dataset
from toy_detector import ToyDetector, ToyEvaluator, toy_batches, toy_sample


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    device = du.init_distributed(torch.device("cpu"))
    assert dist.get_backend() == "gloo" and du.get_world_size() == world_size
    seed_all(rank)  # different initial weights per process: DDP must broadcast rank 0's
    model = ToyDetector()
    opt = torch.optim.SGD(param_groups(model, weight_decay=1e-4, weight_decay_norm=0.0), lr=0.1,
                          momentum=0.9)
    test = [[toy_sample(100 + 2 * i + rank)] for i in range(2)]  # this process's shard
    trainer = Trainer(
        model=model, optimizer=opt, scheduler=WarmupLRScheduler(opt, max_iter=4),
        data_loader=toy_batches(seed=0, batch_size=2, rank=rank, world_size=world_size),
        max_iter=4, output_dir=out_dir, device=device,
        hooks=standard_hooks(log_period=2, eval_period=0, checkpoint_period=2),
        evaluate=lambda m: inference_on_dataset(m, test, ToyEvaluator(), device=device)[0],
        writer=MetricsWriter(out_dir) if rank == 0 else None,
        prepare_batch=move_batch)
    result = trainer.train()
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    replicas = du.all_gather_object(flat)
    if rank == 0:
        torch.save({"replicas": replicas, "result": result}, os.path.join(out_dir, "out.pt"))
    du.destroy_distributed()


def test_two_gloo_processes_keep_replicas_equal(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    out = torch.load(tmp_path / "out.pt", weights_only=True)
    r0, r1 = out["replicas"]
    assert torch.equal(r0, r1)
    seed_all(0)
    init = torch.cat([p.detach().flatten() for p in ToyDetector().parameters()])
    assert not torch.allclose(init, r0)  # it trained
    assert out["result"]["num_images"] == 4.0  # both shards reached the evaluator
    ckpt = load_checkpoint(tmp_path / "last.pth")
    assert ckpt["iteration"] == 4 and len(ckpt["rng"]) == 2  # each process's RNG states
    assert not torch.equal(ckpt["rng"][0]["torch"], ckpt["rng"][1]["torch"])
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()  # rank 0's only
    assert [json.loads(x)["iteration"] for x in lines] == [2, 4, 4]  # train, train, eval
