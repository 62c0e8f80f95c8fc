"""Requeue a SLURM job after its preemption checkpoint, so the same job resumes from it.

SLURM warns a job before its time limit with a signal when asked to (``sbatch --signal=USR1@120``:
SIGUSR1 two minutes before). The trainer saves a checkpoint at its next step boundary
(:mod:`cosanneal.runtime.preemption`), then rank 0 runs ``scontrol requeue <job id>``: SLURM puts the
job back in the queue with the same id and script, and when it starts again ``cosanneal train`` finds
the checkpoint in the run directory and continues exactly where it stopped. This is what Lightning's
SLURM plugin does; here it happens after the checkpoint is committed and the run store is durable.

The job id is ``SLURM_ARRAY_JOB_ID_SLURM_ARRAY_TASK_ID`` for a task of a job array (requeueing the
array's id would requeue every task), else ``SLURM_JOB_ID``.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import signal
import subprocess
from collections.abc import Mapping

__all__ = ["RequeueResult", "requeue", "slurm_job_id"]

#: seconds ``scontrol`` may take before the requeue counts as failed
TIMEOUT = 60.0


def slurm_job_id(environ: Mapping[str, str] | None = None) -> str | None:
    """The id ``scontrol requeue`` takes for this job, or ``None`` outside SLURM.

    Example:
        >>> slurm_job_id({"SLURM_JOB_ID": "4242"})
        '4242'
        >>> slurm_job_id({"SLURM_JOB_ID": "4250", "SLURM_ARRAY_JOB_ID": "4242", "SLURM_ARRAY_TASK_ID": "7"})
        '4242_7'
        >>> slurm_job_id({}) is None
        True
    """
    env = os.environ if environ is None else environ
    array, task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return env.get("SLURM_JOB_ID") or None


def signal_number(name: str) -> int:
    """The number of a signal given by name (``"SIGUSR1"``).

    Example:
        >>> signal_number("SIGUSR1") == signal.SIGUSR1
        True
    """
    return int(getattr(signal, name))


@dataclasses.dataclass(frozen=True)
class RequeueResult:
    """What ``scontrol requeue`` did: ``ok``, the command run, and its output or the error."""

    ok: bool
    command: tuple[str, ...]
    detail: str


def requeue(job_id: str, scontrol: str = "scontrol", *, timeout: float = TIMEOUT) -> RequeueResult:
    """Run ``scontrol requeue <job_id>`` and report whether SLURM accepted it.

    ``scontrol`` may hold extra words (``"sudo -n scontrol"``; split like a shell would). A missing
    command, a non-zero exit or a timeout is a failed requeue, never an exception: the checkpoint is
    already safe, and the caller records the failure and exits with the preemption's status.

    Example:
        >>> requeue("1", scontrol="false").ok
        False
    """
    command = (*shlex.split(scontrol), "requeue", job_id)
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        return RequeueResult(False, command, f"{command[0]}: command not found")
    except subprocess.TimeoutExpired:
        return RequeueResult(False, command, f"no answer within {timeout:g} s")
    output = (proc.stdout + proc.stderr).strip().splitlines()
    detail = output[-1] if output else ""
    if proc.returncode != 0:
        return RequeueResult(False, command, f"exit {proc.returncode}" + (f": {detail}" if detail else ""))
    return RequeueResult(True, command, detail)
