"""Instructions per retried call, resetguard's decorator vs a hand loop, counted by callgrind.

Run: .venv/bin/python benchmarks/retry_instructions.py [--calls N]   (needs ``valgrind``)

Timing the failure path on a shared VM moves by ±1 µs between runs; an instruction count
does not. The function fails every other call (``ConnectionResetError``), so each
decorated call is one failure, then a success; both sides retry up to 3 times with no
wait. The count for 0 calls (start-up and a warm-up) is subtracted from the count for
``N`` calls, so what is left is the cost per call.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WARMUP = 200
SETUP = """
import resetguard
from resetguard import Backoff, Retry

state = [0]

def flaky():
    state[0] += 1
    if state[0] % 2:
        raise ConnectionResetError(104, "Connection reset by peer")
    return 1

def hand():
    for i in range(3):
        try:
            return flaky()
        except ConnectionError:
            if i == 2:
                raise
    raise AssertionError

decorated = resetguard.retry(Retry(attempts=3, backoff=Backoff.none()))(flaky)
"""


def _instructions(target: str, calls: int) -> int:
    code = f"{SETUP}\nfor _ in range({WARMUP + calls}):\n    {target}()\n"
    fd, out = tempfile.mkstemp(suffix=".callgrind")
    os.close(fd)
    try:
        env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=str(ROOT / "src"))
        command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}"]
        subprocess.run(
            [*command, sys.executable, "-c", code],
            check=True,
            env=env,
            capture_output=True,
        )
        text = Path(out).read_text()
    finally:
        os.unlink(out)
    found = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M)
    if found is None:
        raise SystemExit("callgrind wrote no instruction total")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=5000, help="calls counted (default 5000)")
    args = parser.parse_args()
    if args.calls < 1:
        parser.error(f"--calls must be at least 1, got {args.calls}")
    print("one failure then a success per call, instructions per call (callgrind)\n")
    print("| call | instructions |\n|---|---:|")
    for name, target in (("hand-written loop", "hand"), ("@resetguard.retry", "decorated")):
        per_call = (_instructions(target, args.calls) - _instructions(target, 0)) / args.calls
        print(f"| {name} | {per_call:,.0f} |")


if __name__ == "__main__":
    main()
