import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One thread: these small CPU convolutions gain little from two, and two threads on cores
    shared with other jobs can be 5x slower (OpenMP waits for a descheduled thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
