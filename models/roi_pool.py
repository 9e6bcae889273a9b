"""The box head's RoI pooling spread over the CPU's threads: the same numbers, about half the time on two cores.

Why: torchvision's CPU ``roi_align`` kernel runs on one thread whatever ``torch.get_num_threads()`` says, and RoI
pooling is the largest part of a mammogram's detection after the convolutions (the profile:
``docs/experiments/performance.md``).

How: :class:`ThreadedRoIAlign` is torchvision's ``MultiScaleRoIAlign`` (same levels, output size and sampling ratio
as ``FasterRCNN``'s default, no weights, so state dicts do not change) whose ``forward``, at inference, cuts each
image's boxes into one contiguous run per thread, pools the runs at the same time and puts the rows back in their
order. Each box is pooled alone (its level depends only on its own size), so the result is the same tensor bit for
bit. Training, autograd (Grad-CAM), non-CPU tensors, a single thread and small batches take the parent's path.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor
from torchvision.ops import MultiScaleRoIAlign

#: fewer boxes than this in a call are pooled on one thread (the split would cost more than it saves)
MIN_BOXES_TO_SPLIT = 64
MAX_PARTS = 8
#: torchvision's FasterRCNN default RoI pooler: FPN levels P2-P5, 7 x 7 output, 2 samples per bin
FEATMAP_NAMES = ["0", "1", "2", "3"]
OUTPUT_SIZE = 7
SAMPLING_RATIO = 2

_POOL_LOCK = threading.Lock()
_POOL: tuple[int, ThreadPoolExecutor] | None = None


def _executor() -> ThreadPoolExecutor:
    """This process's worker threads, started as needed (a forked child, such as a Celery worker, makes its own:
    threads do not survive a fork)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL[0] != os.getpid():
            _POOL = (os.getpid(), ThreadPoolExecutor(max_workers=MAX_PARTS - 1, thread_name_prefix="mccad-roi"))
        return _POOL[1]


class ThreadedRoIAlign(MultiScaleRoIAlign):
    """``MultiScaleRoIAlign`` that pools its boxes on ``torch.get_num_threads()`` threads at inference (module
    docstring)."""

    def __init__(self) -> None:
        super().__init__(featmap_names=FEATMAP_NAMES, output_size=OUTPUT_SIZE, sampling_ratio=SAMPLING_RATIO)

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]) -> Tensor:
        parts = min(torch.get_num_threads(), MAX_PARTS)
        total = sum(int(b.shape[0]) for b in boxes)
        serial = (self.training or torch.is_grad_enabled() or parts < 2 or total < MIN_BOXES_TO_SPLIT
                  or self.scales is None  # the first call sets the level scales; later calls only read them
                  or any(t.device.type != "cpu" for t in x.values()))
        if serial:
            return super().forward(x, boxes, image_shapes)
        bounds = [[round(int(b.shape[0]) * k / parts) for k in range(parts + 1)] for b in boxes]
        runs = [[b[s[k]:s[k + 1]] for b, s in zip(boxes, bounds, strict=True)] for k in range(parts)]
        inference = torch.is_inference_mode_enabled()

        def pool(run: list[Tensor]) -> Tensor:
            with torch.inference_mode(inference), torch.no_grad():  # grad modes are per thread: carry the caller's
                return super(ThreadedRoIAlign, self).forward(x, run, image_shapes)

        futures = [_executor().submit(pool, run) for run in runs[1:]]
        pooled = [pool(runs[0])] + [f.result() for f in futures]
        # part k holds, image by image, the k-th run of each image's boxes: take them back in the boxes' order
        offsets = [0] * parts
        rows: list[Tensor] = []
        for s in bounds:
            for k in range(parts):
                n = s[k + 1] - s[k]
                rows.append(pooled[k][offsets[k]:offsets[k] + n])
                offsets[k] += n
        return torch.cat(rows)
