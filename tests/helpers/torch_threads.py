"""`single_thread`: an autouse fixture for tests on tiny tensors (import it into the test module).

On tiny shapes intra-op threads only add OpenMP synchronisation, and on a loaded shared machine a
2-thread barrier can turn a 0.1 ms convolution into 25 ms; one thread keeps such tests fast.
"""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
