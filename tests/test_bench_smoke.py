"""The benchmark scripts still run and print their figures, with a few requests each.

``bench_bills.py`` and ``bench_queries.py`` run as their own commands (their own sandbox and
backend, on the suite's database server); the others run their ``run(stack, args)`` against
the suite's stack meanwhile. The figures mean nothing at this size; only that they are printed."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from wx_backend.embedded import ROOT

sys.path.insert(0, str(ROOT / "bench"))

import bench_confirm
import bench_memory
import bench_orders


def check_common(name: str, out: str) -> None:
    assert re.search(r"^cores: [0-9]+", out, re.M), out
    assert f"command: python bench/{name} " in out, out
    rows = re.findall(r"([0-9]+) ok +([0-9]+) failed", out)
    assert all(int(ok) > 0 and failed == "0" for ok, failed in rows), out


def test_every_bench_script_prints_its_figures(stack, mongodb_uri, capsys):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WX_")}
    env["MONGODB_URI"] = mongodb_uri
    bills = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench" / "bench_bills.py"),
            "--requests",
            "6",
            "--concurrency",
            "2",
            "--duration",
            "10",
            "--bills",
            "3",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    queries = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench" / "bench_queries.py"),
            "--accounts",
            "30",
            "--months",
            "3",
            "--users",
            "3",
            "--clients",
            "1,2",
            "--requests",
            "6",
            "--timeout",
            "30",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        bench_orders.run(
            stack,
            bench_orders.parse(["--requests", "4", "--concurrency", "2", "--duration", "10", "--latency-ms", "50"]),
        )
        orders = capsys.readouterr().out
        bench_confirm.run(stack, bench_confirm.parse(["--runs", "1", "--warmup", "0"]))
        confirm = capsys.readouterr().out
        bench_memory.run(
            stack,
            bench_memory.parse(
                [
                    "--requests",
                    "4",
                    "--orders",
                    "2",
                    "--bills",
                    "2",
                    "--concurrency",
                    "2",
                    "--duration",
                    "10",
                    "--latency-ms",
                    "50",
                ]
            ),
        )
        memory = capsys.readouterr().out
        bills_out = bills.communicate(timeout=120)[0]
        queries_out = queries.communicate(timeout=180)[0]
    finally:
        for proc in (bills, queries):
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert bills.returncode == 0, bills_out
    assert queries.returncode == 0, queries_out
    rows = re.findall(r"^(bills|charges|usage) +([12]) +([0-9]+) +([0-9]+) +[0-9.]+ +[0-9.]+", queries_out, re.M)
    assert [(r[0], r[1]) for r in rows] == [(e, c) for c in "12" for e in ("bills", "charges", "usage")], queries_out
    assert all(r[2] == "6" and r[3] == "0" for r in rows), queries_out  # 6 answered, no errors
    assert stack.sandbox_call("GET", "/sandbox/latency").json() == {"ms": 0.0}  # the latency was put back

    for name, out in (
        ("bench_bills.py", bills_out),
        ("bench_orders.py", orders),
        ("bench_confirm.py", confirm),
        ("bench_memory.py", memory),
    ):
        check_common(name, out)
    for out in (bills_out, orders):
        assert len(re.findall(r" ok +[0-9]+ failed", out)) == 5, out  # 2 warm-ups, ours, baseline, database
        assert re.search(r"^ratio ours/\S+: throughput [0-9.]+ +median latency [0-9.]+", out, re.M), out
    assert re.search(r"^ratio ours/library: median time [0-9.]+$", confirm, re.M), confirm
    assert re.search(r"^  queue [0-9.]+ +pdf [0-9.]+ +transfer [0-9.]+ +storage [0-9.]+", confirm, re.M), confirm
    peaks = re.findall(r"VmHWM +([0-9.]+) MiB", memory)
    assert len(peaks) == 4 and float(peaks[0]) > 10, memory


def test_the_finding_benchmark_prints_its_figures(mongodb_uri):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WX_")}
    env["MONGODB_URI"] = mongodb_uri
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_finding.py"), "--accounts", "60", "--requests", "12"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    rows = re.findall(
        r"^(\(bound list\)|proposals|search name|search addr|by meter) +([0-9]+) +([0-9]+) ", out.stdout, re.M
    )
    assert [r[0] for r in rows] == ["(bound list)", "proposals", "search name", "search addr", "by meter"], out.stdout
    assert all(r[1] == "12" and r[2] == "0" for r in rows), out.stdout  # 12 answered, no errors
