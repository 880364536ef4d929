"""The process set-up of `vlalign.runtime`, each case in a fresh interpreter (it changes process-wide state)."""

import json
import os
import subprocess
import sys

import pytest

from vlalign.runtime import _is_glibc

# Allocates, touches and frees a 64 MiB block (above glibc's largest mmap threshold) ten times, and
# prints the minor page faults of the last nine rounds: each round faults the block in again when the
# freed block went back to the system.
REUSE = """
import ctypes, json, resource, sys
if sys.argv[1] == "configured":
    from vlalign.runtime import configure_process
    configure_process()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 64 << 20
def round_trip():
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
round_trip()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(9):
    round_trip()
print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before))
"""


def _run(code: str, *args: str, env: dict | None = None) -> str:
    run = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                         env={**os.environ, **(env or {})})  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


@pytest.mark.skipif(not _is_glibc(), reason="mallopt is glibc's")
def test_freed_large_blocks_are_reused_not_faulted_in_again():
    pages = (64 << 20) // os.sysconf("SC_PAGE_SIZE")
    default = json.loads(_run(REUSE, "default"))
    configured = json.loads(_run(REUSE, "configured"))
    assert default >= 9 * pages * 0.9  # the block comes back from the kernel every round
    assert configured < pages // 10  # the heap keeps it: almost no new faults


WAIT_POLICY = """
import json, os
from vlalign.runtime import configure_process
configure_process()
print(json.dumps(os.environ.get("OMP_WAIT_POLICY")))
"""


def test_openmp_threads_wait_passively_unless_the_user_chose():
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    run = subprocess.run([sys.executable, "-c", WAIT_POLICY], capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout) == "PASSIVE"
    assert json.loads(_run(WAIT_POLICY, env={"OMP_WAIT_POLICY": "ACTIVE"})) == "ACTIVE"


def test_the_command_line_sets_up_the_process_before_a_stage_runs():
    # A stage that fails at once on a missing file still runs after the set-up: the policy is in its environment.
    code = """
import json, os, sys
import vlalign.cli as cli
code = cli.main(["gather-embeddings", "--parts", "/nonexistent/part", "--out", "/nonexistent/out"])
print(json.dumps([code, os.environ.get("OMP_WAIT_POLICY")]))
"""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    exit_code, policy = json.loads(run.stdout.strip().splitlines()[-1])
    assert exit_code != 0 and policy == "PASSIVE"
