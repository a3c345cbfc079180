"""One process or several under `accelerate launch`: who keeps the books, and how the others follow.

The main process decides (what to run, what failed) and writes manifests; the others take its
answer. Nothing of our own is distributed: Accelerate sets up the process group.
"""

from __future__ import annotations

import os


def is_main_process() -> bool:
    """True outside `accelerate launch`/torchrun, and on its rank 0 inside."""
    return int(os.environ.get("RANK", "0")) == 0


def distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def wait_for_everyone() -> None:
    if distributed():
        from accelerate import PartialState

        PartialState().wait_for_everyone()


def shared(decide):
    """`decide()` on the main process, its answer on every process (one process: just the call)."""
    if not distributed():
        return decide()
    import torch.distributed as dist
    from accelerate import PartialState

    PartialState()  # sets up the process group (gloo on CPU, nccl on GPUs) if nothing did yet
    box = [decide() if is_main_process() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]
