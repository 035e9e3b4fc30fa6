"""The load generator's own cost, measured: CPU per request and the requests/s one process can offer.

For each protocol and generator layout it runs `distil loadtest run` against one tritonserver serving
REPOSITORY (started once, on free ports), a few steps of closed-loop users, and prints per step the
generator's cores (every Locust process), the server's and the machine's, the requests/s, and the
generator's CPU per request; with --cross-check, perf_analyzer at the same concurrency beside it.
Runs alternate between the layouts and protocols, so a slow moment of the machine hits them alike.

    .venv/bin/python scripts/bench_generator.py REPOSITORY [--distil OTHER_DISTIL ...] [--rounds 2]

``--distil`` adds another distil executable (an older checkout's, say) to compare side by side: each
runs the same load against the same server. Figures are this machine's; nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(sys.executable).parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("repository", type=Path)
    parser.add_argument("--distil", action="append", default=[], help="another distil executable to compare")
    parser.add_argument("--protocols", default="http,http-binary,grpc")
    parser.add_argument("--processes", default="1,2", help="generator processes to compare (this distil only)")
    parser.add_argument("--levels", default="4,16")
    parser.add_argument("--step-duration", default="8")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--cross-check", action="store_true", help="perf_analyzer beside (this distil only)")
    args = parser.parse_args()

    from distil.model_repository.server import ServerConfig, TritonServer

    mine = str(HERE / "distil")
    layouts = [(mine, int(n)) for n in args.processes.split(",")] + [(other, 1) for other in args.distil]
    rows = []
    with TritonServer(ServerConfig.on_free_ports(args.repository, ready_timeout_s=180)) as server:
        env = dict(os.environ, DISTIL_ADMIN_KEY=server.config.admin_key)
        for round_number in range(args.rounds):
            for protocol in args.protocols.split(","):
                url = server.config.grpc_url if protocol == "grpc" else server.config.http_url
                for executable, processes in layouts:
                    with tempfile.TemporaryDirectory() as out:
                        command = [executable, "loadtest", "run", "--url", url, "--protocol", protocol]
                        command += ["--metrics-url", f"127.0.0.1:{server.config.metrics_port}"]
                        command += ["--levels", args.levels, "--step-duration", args.step_duration, "--out", out]
                        if processes > 1:
                            command += ["--processes", str(processes)]
                        if args.cross_check and executable == mine and processes == 1:
                            command += ["--cross-check"]
                        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=out, check=False)
                        if done.returncode != 0:
                            print(done.stdout[-2000:], done.stderr[-2000:], file=sys.stderr)
                            return 1
                        record = json.loads((Path(out) / "run.json").read_text())
                    label = "this" if executable == mine else executable
                    for step in record["steps"]:
                        rate = step["requests"] / step["duration_s"]
                        rows.append(
                            (round_number, protocol, f"{label} ×{processes}", step["users"], rate,
                             step["client_cpu"], step["server_cpu"], step["host_cpu"],
                             1000 * step["client_cpu"] / rate)
                        )  # fmt: skip
                    for level in record.get("cross_check") or ():
                        rate = level["throughput_rps"]
                        rows.append(
                            (round_number, protocol, "perf_analyzer", level["concurrency"], rate,
                             level["client_cpu"], None, level["host_cpu"], 1000 * level["client_cpu"] / rate)
                        )  # fmt: skip
    print("| round | protocol | generator | users | requests/s | generator cores | server cores | machine cores "
          "| generator CPU per request |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r, protocol, label, users, rate, client, srv, host, per in rows:
        server_cores = "-" if srv is None else f"{srv:.2f}"
        print(
            f"| {r} | {protocol} | {label} | {users} | {rate:,.0f} | {client:.3f} | {server_cores} | {host:.2f} "
            f"| {per:.3f} ms |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
