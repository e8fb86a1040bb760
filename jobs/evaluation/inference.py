"""Model inference for evaluation and nowcasts: the device to run on, and bit-reproducible batched outputs."""
from __future__ import annotations

import numpy as np
import torch

DEFAULT_BATCH_SIZE = 8


def resolve_device(name: str = "auto") -> str:
    """`--device`: "auto" is a CUDA GPU when one is visible, else the CPU; ValueError for "cuda" without one."""
    if name not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is visible to this process")
    return "cuda" if name == "auto" and torch.cuda.is_available() else ("cpu" if name == "auto" else name)


def predict(model, x: np.ndarray, batch_size: int = DEFAULT_BATCH_SIZE, device: str = "cpu") -> np.ndarray:
    """Model outputs for float32 inputs `[N, ...]` in float32, on `device` ("cpu" or "cuda").

    Batches hold exactly `batch_size` rows (the last one padded with copies of its last row). On the
    CPU they run on one intra-op thread, as in a 1-CPU Ray task, so every row's output is
    bit-reproducible: CPU kernels pick their algorithm and reduction order by shape and thread count.
    On a GPU the outputs agree to float tolerance (cuDNN chooses its own algorithms).
    """
    outputs = []
    threads = torch.get_num_threads()
    model.eval().to(device)
    if device == "cpu":
        torch.set_num_threads(1)
    try:
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                chunk = x[start:start + batch_size]
                padded = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - len(chunk), axis=0)])
                batch = torch.from_numpy(np.ascontiguousarray(padded)).to(device)
                outputs.append(model(batch).float().cpu().numpy()[:len(chunk)])
    finally:
        torch.set_num_threads(threads)
        model.to("cpu")
    return np.concatenate(outputs) if outputs else np.zeros((0,), dtype=np.float32)
