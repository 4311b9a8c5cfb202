"""Artifact uploads: tracking_tasks vs raw MlflowClient on one `mlflow server`.

Two cases, in one run against the same server:

- many small files (default 1,000 of 10 KB): ``upload_artifacts.fn`` vs
  ``MlflowClient.log_artifacts`` (goal: the library at least 3x faster);
- one large file (default 1 GB): ``upload_artifacts.fn`` vs ``MlflowClient.log_artifact``
  (goal: within 1.1x of raw) and the uploading process's peak RSS growth (goal: under
  100 MB).

The server is started as ``mlflow server`` starts by default (4 uvicorn workers;
``--server-workers`` to change), with MLflow's job runner off for both sides. Every
measurement runs in a fresh subprocess (so RSS growth is that upload's alone) and
uploads to a fresh artifact path (so the library's resumption skips nothing). The
library's time includes what raw MLflow does not do: hashing every file, listing before
and after, and storing the manifest twice. Median, min and max of ``--reps`` repetitions
(``--large-reps`` for the large file) are printed with the ratios and written as JSON to
``bench/results/artifacts.json``, with the CPU time the server's processes and the
uploading process spent: on a machine where client and server share the cores, the
server's CPU per file bounds what any client can reach. Both cases are measured on
plain loopback; the small files again with a network round trip between both clients
and the server (``--rtt-ms``, default ``0 2``; ``bench/delay_relay.py``), as when the
server is another machine.

    .venv/bin/python bench/bench_artifacts.py                      # full size
    .venv/bin/python bench/bench_artifacts.py --large-mb 100       # quicker
    .venv/bin/python bench/bench_artifacts.py --rtt-ms 0           # loopback only
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import REPO, machine


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def worker(mode: str, uri: str, run_id: str, experiment_id: str, src: str, dest: str) -> None:
    """One upload in this process; print seconds and peak RSS growth as JSON."""
    from mlflow import MlflowClient

    from tracking_tasks import RunRef
    from tracking_tasks.ops._artifacts.upload import upload_artifacts

    client = MlflowClient(uri)
    run = RunRef(run_id=run_id, experiment_id=experiment_id, run_name="bench", tracking_uri=uri)
    # warm both alike: the client's connection, and MLflow's artifact modules (imported
    # lazily by raw MLflow and by the library)
    client.list_artifacts(run_id)
    Path("/proc/self/clear_refs").write_text("5")  # Linux: reset the peak RSS (VmHWM) to now
    baseline = _status_kb("VmRSS:")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu_before = usage.ru_utime + usage.ru_stime
    start = time.perf_counter()
    if mode == "lib":
        upload_artifacts(run, src, dest)
    elif Path(src).is_dir():
        client.log_artifacts(run_id, src, dest)
    else:
        client.log_artifact(run_id, src, dest)
    seconds = time.perf_counter() - start
    peak = _status_kb("VmHWM:")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "rss_growth_mb": max(0, peak - baseline) / 1024,
                "client_cpu": usage.ru_utime + usage.ru_stime - cpu_before,
            }
        )
    )


def _tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its descendants, from Linux /proc."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        ticks[int(entry.name)] = int(fields[11]) + int(fields[12])
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, its_parent in parents.items():
            if its_parent == parent and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(ticks.get(p, 0) for p in tree) / os.sysconf("SC_CLK_TCK")


def _measure(
    mode: str, uri: str, run: Any, src: Path, dest: str, server_pid: int
) -> dict[str, float]:
    env = {**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING"}
    server_before = _tree_cpu_seconds(server_pid)
    out = subprocess.run(
        [
            sys.executable, __file__, "--worker", mode, uri, run.info.run_id,
            run.info.experiment_id, str(src), dest,
        ],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )  # fmt: skip
    measured = dict(json.loads(out.stdout.strip().splitlines()[-1]))
    measured["server_cpu"] = _tree_cpu_seconds(server_pid) - server_before
    return measured


def _start_relay(upstream: str, rtt_ms: float) -> tuple[subprocess.Popen[bytes], str]:
    """bench/delay_relay.py in its own process in front of ``upstream``; (process, url)."""
    relay = subprocess.Popen(
        [
            sys.executable, str(Path(__file__).with_name("delay_relay.py")),
            "--upstream", upstream.split("//", 1)[1], "--rtt-ms", str(rtt_ms),
        ],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    assert relay.stdout is not None
    line = relay.stdout.readline().decode().split()
    if line[:1] != ["listening"]:
        relay.kill()
        raise RuntimeError(f"delay relay did not start: {line}")
    return relay, f"http://127.0.0.1:{line[1]}"


def _summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def _make_small(root: Path, count: int, size_kb: int) -> Path:
    root.mkdir(parents=True)
    for i in range(count):
        (root / f"shard-{i:05d}.bin").write_bytes(os.urandom(size_kb * 1024))
    return root


def _make_large(path: Path, size_mb: int) -> Path:
    block = os.urandom(1024 * 1024)
    with path.open("wb") as f:
        for i in range(size_mb):
            f.write(block[i % 256 :] + block[: i % 256])  # distinct blocks, cheap to make
    return path


def _measure_cases(
    url: str,
    run: Any,
    stored: Path,
    server_pid: int,
    cases: list[tuple[str, Path, int]],
    label: str,
) -> dict[str, Any]:
    """Both cases at one setting: timings, CPU, RSS, ratios and goals."""
    results: dict[str, Any] = {}
    for case, src, reps in cases:
        samples: dict[str, dict[str, list[float]]] = {
            key: {"lib": [], "raw": []}
            for key in ("seconds", "rss_growth_mb", "client_cpu", "server_cpu")
        }
        for rep in range(reps):
            for mode in ("raw", "lib") if rep % 2 else ("lib", "raw"):
                dest = f"{label}-{case}-{mode}-{rep}"
                measured = _measure(mode, url, run, src, dest, server_pid)
                for key, values in samples.items():
                    values[mode].append(measured[key])
                shutil.rmtree(stored / dest, ignore_errors=True)  # keep the disk free
        times = samples["seconds"]
        entry: dict[str, Any] = {
            "reps": reps,
            **{
                key: {mode: _summary(v) for mode, v in values.items()}
                for key, values in samples.items()
            },
        }
        lib_median = entry["seconds"]["lib"]["median"]
        raw_median = entry["seconds"]["raw"]["median"]
        entry["raw_over_lib"] = raw_median / lib_median
        entry["lib_over_raw"] = lib_median / raw_median
        results[case] = entry
        print(
            f"[{label}] {case}: lib median {lib_median:.2f}s (min {min(times['lib']):.2f}, "
            f"max {max(times['lib']):.2f}), raw median {raw_median:.2f}s (min "
            f"{min(times['raw']):.2f}, max {max(times['raw']):.2f}); raw/lib "
            f"{entry['raw_over_lib']:.2f}x, lib/raw {entry['lib_over_raw']:.2f}x; peak RSS "
            f"growth lib {entry['rss_growth_mb']['lib']['max']:.1f} MB, raw "
            f"{entry['rss_growth_mb']['raw']['max']:.1f} MB",
            flush=True,
        )
        cpu = {
            f"{side}_{mode}": entry[f"{side}_cpu"][mode]["median"]
            for side in ("server", "client")
            for mode in ("lib", "raw")
        }
        # both sides share this machine's cores: the library's upload cannot take less
        # than (server CPU + client CPU) / cores, whatever its concurrency
        floor = (cpu["server_lib"] + cpu["client_lib"]) / (os.cpu_count() or 1)
        entry["lib_floor_seconds"] = floor
        print(
            f"  CPU seconds (median): server {cpu['server_lib']:.2f} for lib, "
            f"{cpu['server_raw']:.2f} for raw; client {cpu['client_lib']:.2f} lib, "
            f"{cpu['client_raw']:.2f} raw. On {os.cpu_count()} cores the library's "
            f"upload cannot take less than {floor:.2f}s here: raw/lib at most "
            f"{raw_median / floor:.2f}x",
            flush=True,
        )
    goals = {"small_files_at_least_3x_faster": results["small_files"]["raw_over_lib"] >= 3}
    if "large_file" in results:
        large = results["large_file"]
        goals["large_file_within_1_1x"] = large["lib_over_raw"] <= 1.1
        goals["large_file_rss_growth_under_100_mb"] = large["rss_growth_mb"]["lib"]["max"] < 100
    results["goals"] = goals
    print(f"[{label}] goals:", json.dumps(results["goals"]), flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--file-kb", type=int, default=10)
    parser.add_argument("--large-mb", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--large-reps", type=int, default=3)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "artifacts.json"))
    parser.add_argument(
        "--rtt-ms",
        type=float,
        nargs="+",
        default=[0.0, 2.0],
        help="network round trips to measure at, each between both clients and the "
        "server (bench/delay_relay.py); 0 is plain loopback (default: 0 2)",
    )
    parser.add_argument(
        "--server-workers",
        type=int,
        default=4,
        help="mlflow server --workers (default 4, MLflow's own default)",
    )
    args = parser.parse_args()

    from mlflow import MlflowClient

    from tests.servers import start_mlflow_server, stop_process_group
    from tracking_tasks import RunRef
    from tracking_tasks.ops._artifacts.upload import upload_artifacts

    work = Path(tempfile.mkdtemp(prefix="tt-bench-artifacts-"))
    (work / "server").mkdir()
    server = start_mlflow_server(work / "server", workers=args.server_workers)
    try:
        client = MlflowClient(server.url)
        experiment_id = client.create_experiment("bench-artifacts")
        run = client.create_run(experiment_id, run_name="bench")
        stored = work / "server" / "artifacts" / experiment_id / run.info.run_id / "artifacts"
        cases = [
            ("small_files", _make_small(work / "small", args.files, args.file_kb), args.reps),
            ("large_file", _make_large(work / "large.bin", args.large_mb), args.large_reps),
        ]
        warm = _make_small(work / "warm", 16 * args.server_workers, 1)
        results: dict[str, Any] = {
            "machine": machine(),
            "params": vars(args),
        }
        for rtt_ms in args.rtt_ms:
            label = f"rtt_{rtt_ms:g}ms" if rtt_ms > 0 else "loopback"
            relay: subprocess.Popen[bytes] | None = None
            url = server.url
            if rtt_ms > 0:  # both sides reach the server through the same delay
                relay, url = _start_relay(server.url, rtt_ms)
            try:
                # untimed: a server worker's first artifact requests are slow (lazy
                # imports), so reach every worker, and warm the raw path too
                ref = RunRef(
                    run_id=run.info.run_id,
                    experiment_id=experiment_id,
                    run_name="bench",
                    tracking_uri=url,
                )
                upload_artifacts(ref, warm, f"warm-lib-{label}")
                MlflowClient(url).log_artifacts(run.info.run_id, str(warm), f"warm-raw-{label}")
                # the large file is one request, which a round trip does not change,
                # while relaying 1 GB would cost the shared cores the relay's CPU
                measured = cases if rtt_ms == 0 else cases[:1]
                results[label] = _measure_cases(url, run, stored, server.proc.pid, measured, label)
            finally:
                if relay is not None:
                    stop_process_group(relay)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {out}")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(*sys.argv[2:8])
    else:
        main()
