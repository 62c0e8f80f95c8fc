"""Analysis of finished or running jobs: verify the LR a job really used against its schedule.

Public names:

* :func:`verify` and :class:`Verdict` (with :class:`Diagnosis` and :class:`Mismatch`): compare an LR
  trace with a schedule and explain the difference;
* :func:`load_trace` and :func:`read_trace` (with :class:`Trace`): read an LR trace from a cosanneal
  run directory, TensorBoard event files, a CSV/JSONL file or an MLflow run.
"""

from __future__ import annotations

from cosanneal.analysis.diagnose import Diagnosis
from cosanneal.analysis.trace_sources import Trace, TraceError, load_trace, read_trace
from cosanneal.analysis.verify import Mismatch, Verdict, verify

__all__ = [
    "Diagnosis",
    "Mismatch",
    "Trace",
    "TraceError",
    "Verdict",
    "load_trace",
    "read_trace",
    "verify",
]
