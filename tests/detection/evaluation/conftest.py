import multiprocessing

import pytest
import torch


def _worker(rank, init_file, fn, args, queue):
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                                         world_size=2)
    try:
        queue.put((rank, fn(rank, *args)))
    finally:
        torch.distributed.destroy_process_group()


@pytest.fixture
def two_processes(tmp_path):
    """``run(fn, *args) -> {rank: fn(rank, *args)}``, ``fn`` run in two forked processes
    joined in a gloo process group (both must exit cleanly)."""
    def run(fn, *args):
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        procs = [ctx.Process(target=_worker, args=(r, str(tmp_path / "init"), fn, args, queue))
                 for r in range(2)]
        for p in procs:
            p.start()
        results = dict(queue.get(timeout=120) for _ in procs)
        for p in procs:
            p.join(timeout=30)
            assert p.exitcode == 0
        return results

    return run
