"""Detectron2's ``launch`` that also starts CPU runs of several processes on a machine with GPUs.

Detectron2's ``launch`` gives each process one GPU (asserting that there are as many) and the
NCCL backend whenever CUDA is present, whatever ``MODEL.DEVICE`` says; gloo is taken only on a
machine without CUDA. A CPU run of several processes (``MODEL.DEVICE cpu`` or
``tools/predict.py --device cpu`` with ``--num-gpus N``) then failed on a one-GPU machine with a
bare ``AssertionError``. :func:`launch` starts such processes with ``CUDA_VISIBLE_DEVICES=""``
(the spawned processes inherit it; this process's value is restored afterwards), so that they
see no GPU and take gloo, as on a machine without one.
"""

import os

__all__ = ["launch", "hides_gpus"]


def hides_gpus(device, num_processes, num_machines=1):
    """True when the processes of a run on ``device`` must start without GPUs: a CPU device and
    more than one process in all."""
    return str(device).startswith("cpu") and int(num_processes) * int(num_machines) > 1


def launch(
    main_func,
    num_processes,
    *,
    device,
    num_machines=1,
    machine_rank=0,
    dist_url=None,
    args=(),
    timeout=None,
):
    """Run ``main_func(*args)`` in ``num_processes`` processes per machine (Detectron2's
    ``launch``), hiding the GPUs from the processes of a CPU run (module docstring).

    Parameters
    ----------
    main_func : callable
        Picklable by name (a module-level function), as Detectron2's ``launch`` needs.
    num_processes : int
        Processes on this machine (Detectron2's ``num_gpus_per_machine``).
    device : str
        Where the run computes (``"cpu"``, ``"cuda"``, ``"cuda:0"``): its ``MODEL.DEVICE``.
    num_machines, machine_rank, dist_url, args
        As Detectron2's ``launch``.
    timeout : datetime.timedelta, optional
        Of the process group (default: Detectron2's ``DEFAULT_TIMEOUT``).
    """
    from detectron2.engine.launch import DEFAULT_TIMEOUT
    from detectron2.engine.launch import launch as d2_launch

    hide = hides_gpus(device, num_processes, num_machines)
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    if hide:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    try:
        d2_launch(
            main_func,
            num_processes,
            num_machines=num_machines,
            machine_rank=machine_rank,
            dist_url=dist_url,
            args=args,
            timeout=DEFAULT_TIMEOUT if timeout is None else timeout,
        )
    finally:
        if hide:
            if before is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = before
