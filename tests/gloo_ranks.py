"""Run a function on N real gloo ranks: processes forked from one parent, a file rendezvous.

The body is Python source that defines ``rank_main(rank: int, world_size: int, args: list[str]) ->
dict``; each rank runs it inside its own initialised process group and its JSON-able result comes
back, one file per rank (two ranks printing to one pipe could interleave). Forking happens before
any torch operation, so it is safe; a rank that raises prints its traceback and fails the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

_LAUNCHER = textwrap.dedent(
    """
    import json, os, sys, traceback
    import torch
    import torch.distributed as dist

    store, world_size, body = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    namespace = {"__name__": "rank_body"}
    exec(compile(open(body).read(), body, "exec"), namespace)
    torch.set_num_threads(1)
    pids = []
    for rank in range(world_size):
        pid = os.fork()  # before any torch op: safe to fork
        if pid == 0:
            code = 1
            try:
                dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
                result = namespace["rank_main"](rank, world_size, sys.argv[4:])
                with open(f"{store}-result-{rank}.json", "w") as handle:
                    json.dump(result, handle)
                dist.destroy_process_group()
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(code)
        pids.append(pid)
    sys.exit(0 if all(os.waitpid(p, 0)[1] == 0 for p in pids) else 1)
    """
)


def run_ranks(body: str, tmp_path: Path, *args: str, world_size: int = 2, timeout: float = 180) -> list[Any]:
    """Run ``body``'s ``rank_main`` on ``world_size`` gloo ranks; return each rank's result, in rank order."""
    source = tmp_path / "rank_body.py"
    source.write_text(textwrap.dedent(body))
    store = tmp_path / "store"
    done = subprocess.run(
        [sys.executable, "-c", _LAUNCHER, str(store), str(world_size), str(source), *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(Path(f"{store}-result-{rank}.json").read_text()) for rank in range(world_size)]
