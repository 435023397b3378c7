"""How long a command's own Prefect server takes to answer, and the CPU it spends doing so.

Four cases, each in a new process as ``refine run`` starts it (``flows.local_server``): a new home
whose server migrates the database and registers Prefect's block types (Prefect's defaults), a new
home that migrates without registering (what the first new home on a machine does), a new home
that starts from the machine's template (every later new home) and a home whose database exists.
CPU is the server process's own (user + system) until it first answers; the machine's other core
is idle meanwhile, so wall time is about the CPU time plus the wait for the port.

    python -m benchmarks.server_start [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks._common import emit_json, print_table
from flows.local_server import NO_BLOCK_REGISTRATION

_PROBE = """
import json, os, sys, time
began = time.perf_counter()
from flows.environment import configure_environment
configure_environment()
from flows import local_server
local_server.start_ephemeral()
local_server.ready(timeout=120)
wall = time.perf_counter() - began
proc = local_server._EPHEMERAL["proc"]
with open(f"/proc/{proc.pid}/stat") as handle:
    fields = handle.read().rsplit(")", 1)[1].split()
cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
local_server.stop_ephemeral()
print(json.dumps({"wall": wall, "cpu": cpu, "database": local_server._database_ready_marker().read_text().strip()}))
"""

# Prefect's own defaults, which a user's setting restores (the command's server turns both off)
_REGISTER = dict.fromkeys(NO_BLOCK_REGISTRATION, "true")


def _start(home: Path, cache: Path, extra: dict[str, str] | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"REFINE_HOME": str(home), "REFINE_CACHE_DIR": str(cache), **(extra or {})}
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(repeats: int) -> list[dict]:
    cases: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="refine-server-start-") as tmp:
        root = Path(tmp)
        for i in range(repeats):
            run = root / str(i)
            # Prefect's defaults, no template: migrate and register the block types.
            cases.setdefault("new home, migrate + register blocks", []).append(
                _start(run / "registering", run / "no-cache", _REGISTER)
            )
            # The machine's first new home: migrates, keeps the template.
            cases.setdefault("new home, migrate (first on the machine)", []).append(
                _start(run / "first", run / "cache")
            )
            cases.setdefault("new home, copy of the template", []).append(_start(run / "second", run / "cache"))
            cases.setdefault("existing home", []).append(_start(run / "second", run / "cache"))
    rows = []
    for case, results in cases.items():
        rows.append(
            {
                "case": case,
                "wall_s": statistics.median(r["wall"] for r in results),
                "server_cpu_s": statistics.median(r["cpu"] for r in results),
                "database": results[0]["database"],
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = measure(args.repeats)
    base = rows[0]["server_cpu_s"]
    print(f"command's Prefect server start, median of {args.repeats} (load average {os.getloadavg()[0]:.2f})")
    print_table(
        ["case", "wall s", "server CPU s", "CPU vs Prefect's defaults"],
        [
            [r["case"], f"{r['wall_s']:.2f}", f"{r['server_cpu_s']:.2f}", f"{r['server_cpu_s'] / base:.2f}"]
            for r in rows
        ],
    )
    if args.json:
        emit_json({"rows": rows, "repeats": args.repeats})


if __name__ == "__main__":
    main()
