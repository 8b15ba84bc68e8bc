"""What the gateway adds to a request: direct vs through the gateway vs LiteLLM's proxy, same load.

A fast fake upstream (benchmarks/fake_upstream.py) is measured alone ("direct"), then through a cortex
gateway (a real ``python -m cortex.server.gateway`` process with the upstream as its one neuron), then
through LiteLLM's proxy when ``litellm`` is installed (an optional peer, never a dependency; started
with ``LITELLM_MASTER_KEY`` set). The same load generator (wrk) drives each at 1 and 64 connections,
in both dialects (OpenAI Chat Completions, Anthropic Messages), streamed (10 chunks) and not. The
table shows p50 / p99 latency, requests per second, the latency added over direct at the same load
and the gateway process's CPU time per request. All processes share this machine's cores, so compare
rows of one run, not runs.

    python benchmarks/gateway.py [--duration 5] [--gateway-src src] [--asgi cortex,uvicorn,granian]
                                 [--no-litellm] [--json out.json]

``--gateway-src`` points the gateway process at another source tree (e.g. an older checkout's src/),
which is how the before/after tables in docs/benchmarks.md were made. ``--asgi uvicorn,granian`` runs
the same gateway app under each ASGI server (rows ``gw-uvicorn``, ``gw-granian``), which is how the
server was chosen.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
LITELLM_KEY = "sk-bench"
OPENAI_BODY = {"model": "bench", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}
ANTHROPIC_BODY = {**OPENAI_BODY}
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    pids: tuple[int, ...]  # whose CPU time is counted (empty: not measured)
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class Row:
    target: str
    dialect: str
    mode: str
    clients: int
    p50_ms: float
    p99_ms: float
    requests_per_s: float
    num_requests: int
    errors: int
    cpu_ms_per_request: float | None
    added_p50_ms: float | None = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    url: str, *, ready: str | None = None, timeout_s: float = 60, headers: dict[str, str] | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            reply = httpx.get(url, timeout=2, headers=headers)
            if reply.status_code == 200 and (ready is None or ready in reply.text):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def cpu_seconds(pids: tuple[int, ...]) -> float:
    """User + system CPU of the processes and their children (from /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in _with_children(pids):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def _with_children(pids: tuple[int, ...]) -> list[int]:
    found = list(pids)
    for pid in pids:
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            continue
        found += _with_children(tuple(int(c) for c in children))
    return found


def lua_script(body: dict[str, object], headers: dict[str, str]) -> str:
    lines = ['wrk.method = "POST"', f"wrk.body = [[{json.dumps(body)}]]"]
    lines += [
        f'wrk.headers["{k}"] = "{v}"' for k, v in {"Content-Type": "application/json", **headers}.items()
    ]
    return "\n".join(lines) + "\n"


def _millis(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"cannot read wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(url: str, script: Path, *, clients: int, duration_s: float) -> dict[str, float]:
    threads = 1 if clients == 1 else 2
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{clients}",
            f"-d{max(1, round(duration_s))}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration_s + 60,
    ).stdout
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, flags=re.MULTILINE))
    requests = re.search(r"^\s+(\d+) requests in", out, flags=re.MULTILINE)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if requests is None or rate is None or set(latency) != {"50", "99"}:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    return {
        "p50_ms": _millis(latency["50"]),
        "p99_ms": _millis(latency["99"]),
        "requests_per_s": float(rate.group(1)),
        "num_requests": int(requests.group(1)),
        "errors": errors,
    }


def check_answer(target: Target, dialect: str, stream: bool) -> None:
    """One request, read in full: the target must answer correctly before it is timed."""
    path, body = (
        ("/v1/messages", ANTHROPIC_BODY) if dialect == "anthropic" else ("/v1/chat/completions", OPENAI_BODY)
    )
    headers = {"anthropic-version": "2023-06-01", **dict(target.headers)}
    reply = httpx.post(f"{target.url}{path}", json={**body, "stream": stream}, headers=headers, timeout=30)
    if reply.status_code != 200:
        raise RuntimeError(
            f"{target.name} {dialect} stream={stream}: HTTP {reply.status_code} {reply.text[:300]}"
        )
    text = reply.text
    if stream and not (("[DONE]" in text) if dialect == "openai" else ("message_stop" in text)):
        raise RuntimeError(f"{target.name} {dialect} stream: incomplete stream {text[-300:]!r}")
    if "w9" not in text:
        raise RuntimeError(
            f"{target.name} {dialect} stream={stream}: the upstream's text is missing: {text[:300]!r}"
        )


def measure(target: Target, *, duration_s: float, clients_list: list[int], workdir: Path) -> list[Row]:
    rows = []
    for dialect in ("openai", "anthropic"):
        path, body = (
            ("/v1/messages", ANTHROPIC_BODY)
            if dialect == "anthropic"
            else ("/v1/chat/completions", OPENAI_BODY)
        )
        for stream in (False, True):
            try:
                check_answer(target, dialect, stream)
            except (RuntimeError, httpx.HTTPError) as error:
                print(f"  skipped: {error}", file=sys.stderr)
                continue
            headers = {"anthropic-version": "2023-06-01", **dict(target.headers)}
            script = workdir / f"{target.name}-{dialect}-{stream}.lua"
            script.write_text(lua_script({**body, "stream": stream}, headers))
            url = f"{target.url}{path}"
            run_wrk(url, script, clients=8, duration_s=1)  # warm-up: connections, caches
            for clients in clients_list:
                before = cpu_seconds(target.pids)
                result = run_wrk(url, script, clients=clients, duration_s=duration_s)
                spent = cpu_seconds(target.pids) - before
                num = int(result["num_requests"])
                cpu = 1000 * spent / num if target.pids and num else None
                row = Row(
                    target.name,
                    dialect,
                    "stream" if stream else "whole",
                    clients,
                    cpu_ms_per_request=cpu,
                    **result,
                )
                rows.append(row)
                print(
                    f"  {row.target:8} {row.dialect:9} {row.mode:6} c={clients:<3} "
                    f"p50 {row.p50_ms:7.2f} ms  {row.requests_per_s:8.0f}/s",
                    file=sys.stderr,
                )
    return rows


@contextmanager
def process(args: list[str], *, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _asgi_command(asgi: str, port: int, config: Path) -> list[str]:
    """The gateway's process: ``cortex`` runs ``python -m cortex.server.gateway`` (the ASGI server
    cortex serves with); ``uvicorn`` and ``granian`` run the same app under that server's own CLI, each
    with its fastest kept options (uvloop; httptools for uvicorn), the access log off, one worker."""
    target = "cortex.server.gateway:create_app"
    if asgi == "cortex":
        return [sys.executable, "-m", "cortex.server.gateway", "--config", str(config)]
    if asgi == "uvicorn":
        options = ["--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]
        return [sys.executable, "-m", "uvicorn", "--factory", *options, "--port", str(port), target]
    if asgi == "granian":
        options = ["--interface", "asgi", "--loop", "uvloop", "--no-ws", "--log-level", "warning"]
        return [sys.executable, "-m", "granian", "--factory", *options, "--port", str(port), target]
    raise SystemExit(f"unknown ASGI server {asgi!r}: cortex, uvicorn or granian")


@contextmanager
def gateway(upstream_url: str, *, src: Path, workdir: Path, asgi: str = "cortex") -> Iterator[Target]:
    port, metrics_port = free_port(), free_port()
    config = workdir / "cortex.toml"
    config.write_text(
        f'[gateway]\nlisten = "127.0.0.1:{port}"\nmetrics_listen = "127.0.0.1:{metrics_port}"\n'
        f'[[neurons]]\nname = "fake"\nurl = "{upstream_url}"\n'
    )
    env = {**os.environ, "PYTHONPATH": str(src), "CORTEX_CONFIG": str(config)}
    with process(_asgi_command(asgi, port, config), env=env) as proc:
        url = f"http://127.0.0.1:{port}"
        wait_until(f"{url}/v1/models", ready='"bench"')
        yield Target("gateway" if asgi == "cortex" else f"gw-{asgi}", url, (proc.pid,))


@contextmanager
def litellm(upstream_url: str, *, workdir: Path) -> Iterator[Target | None]:
    executable = shutil.which("litellm") or str(Path(sys.executable).with_name("litellm"))
    if not Path(executable).exists():
        print("LiteLLM is not installed: its rows are left out", file=sys.stderr)
        yield None
        return
    port = free_port()
    config = workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n  - model_name: bench\n    litellm_params:\n      model: openai/bench\n"
        f"      api_base: {upstream_url}/v1\n      api_key: unused\n"
        "litellm_settings:\n  drop_params: true\n"
    )
    env = {
        **os.environ,
        "LITELLM_MASTER_KEY": LITELLM_KEY,
        "LITELLM_LOG": "ERROR",
        # its /v1/messages sends an openai/ model's requests to the Responses API unless told otherwise;
        # the upstream (like most OpenAI-compatible servers) has Chat Completions only
        "LITELLM_USE_CHAT_COMPLETIONS_URL_FOR_ANTHROPIC_MESSAGES": "true",
    }
    with process(
        [executable, "--config", str(config), "--port", str(port), "--num_workers", "1"], env=env
    ) as proc:
        url = f"http://127.0.0.1:{port}"
        auth = {"authorization": f"Bearer {LITELLM_KEY}"}
        wait_until(f"{url}/v1/models", ready='"bench"', timeout_s=180, headers=auth)
        yield Target("litellm", url, (proc.pid,), tuple(auth.items()))


def with_added_latency(rows: list[Row]) -> list[Row]:
    direct = {(r.dialect, r.mode, r.clients): r.p50_ms for r in rows if r.target == "direct"}
    for row in rows:
        base = direct.get((row.dialect, row.mode, row.clients))
        if row.target != "direct" and base is not None:
            row.added_p50_ms = row.p50_ms - base
    return rows


def table(rows: list[Row]) -> str:
    header = (
        "| target | dialect | mode | clients | p50 ms | p99 ms | req/s | added p50 ms | CPU ms/req | errors |"
    )
    lines = [header, "|" + "---|" * 10]
    for r in rows:
        added = "" if r.added_p50_ms is None else f"{r.added_p50_ms:+.2f}"
        cpu = "" if r.cpu_ms_per_request is None else f"{r.cpu_ms_per_request:.3f}"
        lines.append(
            f"| {r.target} | {r.dialect} | {r.mode} | {r.clients} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
            f"{r.requests_per_s:,.0f} | {added} | {cpu} | {r.errors} |"
        )
    return "\n".join(lines)


def ratios(rows: list[Row]) -> str:
    """cortex over LiteLLM, per scenario: requests/s and added latency."""
    by = {(r.target, r.dialect, r.mode, r.clients): r for r in rows}
    lines = []
    for (target, dialect, mode, clients), row in by.items():
        peer = by.get(("litellm", dialect, mode, clients))
        if not target.startswith(("gateway", "gw-")) or peer is None:
            continue
        rate = row.requests_per_s / peer.requests_per_s if peer.requests_per_s else float("inf")
        added = (
            f", added p50 {peer.added_p50_ms / row.added_p50_ms:.0f}x lower"
            if row.added_p50_ms and peer.added_p50_ms and row.added_p50_ms > 0
            else ""
        )
        lines.append(f"- {target} {dialect} {mode} at {clients}: {rate:.0f}x LiteLLM's requests/s{added}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement (default 5)")
    parser.add_argument("--clients", default="1,64", help="connection counts (default 1,64)")
    parser.add_argument(
        "--gateway-src", type=Path, default=SRC, help="the cortex source tree the gateway runs"
    )
    parser.add_argument(
        "--asgi",
        default="cortex",
        help="the gateway's ASGI servers, comma-separated: cortex (its own command), uvicorn, granian",
    )
    parser.add_argument("--no-litellm", action="store_true", help="leave LiteLLM out even if installed")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed (Debian: apt-get install wrk)")
    clients_list = [int(c) for c in args.clients.split(",")]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        port = free_port()
        upstream_cmd = [sys.executable, str(HERE / "fake_upstream.py"), "--port", str(port)]
        with process(upstream_cmd) as upstream:
            upstream_url = f"http://127.0.0.1:{port}"
            wait_until(f"{upstream_url}/health")
            print("direct", file=sys.stderr)
            rows += measure(
                Target("direct", upstream_url, (upstream.pid,)),
                duration_s=args.duration,
                clients_list=clients_list,
                workdir=workdir,
            )
            for asgi in args.asgi.split(","):
                print(f"gateway ({asgi})", file=sys.stderr)
                src = args.gateway_src.resolve()
                with gateway(upstream_url, src=src, workdir=workdir, asgi=asgi) as target:
                    rows += measure(
                        target, duration_s=args.duration, clients_list=clients_list, workdir=workdir
                    )
            if not args.no_litellm:
                print("litellm", file=sys.stderr)
                with litellm(upstream_url, workdir=workdir) as peer:
                    if peer is not None:
                        rows += measure(
                            peer, duration_s=args.duration, clients_list=clients_list, workdir=workdir
                        )
    rows = with_added_latency(rows)
    cores = os.cpu_count()
    print(
        f"machine: {cores} cores shared by wrk, the upstream and the process under test; "
        f"{args.duration:g} s per row"
    )
    print("(CPU ms/req is the measured process's own: the upstream's for direct, the gateway's, LiteLLM's)\n")
    print(table(rows))
    summary = ratios(rows)
    if summary:
        print("\n" + summary)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))


if __name__ == "__main__":
    main()
