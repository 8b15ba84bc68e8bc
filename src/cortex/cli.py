"""The ``cortex`` command line: ``cortex serve | neuron | status | make-model | version``.

Argument parsing only: each subcommand builds its config and calls :mod:`cortex.server.serve` (or the
library), importing what it needs when it runs, so importing this module is cheap. ``python -m cortex``
and ``python -m cortex.server.gateway`` / ``.neuron`` run this same command line.

- ``cortex serve`` runs the gateway over the neurons in cortex.toml; with no neurons configured it
  runs the embedded default (a gateway plus a local neuron, and a demo model when there is none).
- ``cortex neuron`` serves this host's model folders.
- ``cortex status`` prints the fleet table from a running gateway (``--json`` for the raw status).
- ``cortex make-model PATH --arch --preset`` writes a random-weight checkpoint (for tests and demos).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cortex._version import __version__

if TYPE_CHECKING:
    from cortex.server.config import NeuronConfig

ARCHES = ("qwen3_5", "qwen3_5_moe", "qwen3_next", "qwen3")
PRESETS = ("tiny", "small", "0.8b")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cortex",
        description="Serve local LLMs across a fleet of GPU hosts behind one OpenAI + Anthropic endpoint.",
    )
    parser.add_argument("--version", action="version", version=f"cortex {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("version", help="print the version and exit")

    serve = sub.add_parser("serve", help="run the gateway (embedded local neuron when none is configured)")
    serve.add_argument(
        "--config", type=Path, help="cortex.toml (default: $CORTEX_CONFIG, else built-in defaults)"
    )
    serve.add_argument("--listen", help="host:port of the API (default 127.0.0.1:31313)")
    serve.add_argument("--metrics-listen", help="host:port of /metrics (default 127.0.0.1:31314)")
    serve.add_argument("--models", action="append", type=Path, help="local model folder (embedded mode)")
    serve.add_argument("--access-log", action="store_true", help="log one line per request (off by default)")
    serve.add_argument(
        "--demo-preset",
        choices=("tiny", "small"),
        default="tiny",
        help="size of the demo model made when no model exists (default tiny)",
    )

    neuron = sub.add_parser("neuron", help="serve this host's models to a gateway")
    neuron.add_argument("--config", type=Path, help="cortex.toml (its [neuron] section)")
    neuron.add_argument("--listen", help="host:port (default 127.0.0.1:13131)")
    neuron.add_argument("--models", action="append", type=Path, help="a model folder (repeatable)")
    neuron.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    neuron.add_argument("--name", help="this neuron's name in metrics and status")
    neuron.add_argument("--access-log", action="store_true", help="log one line per request (off by default)")

    status = sub.add_parser("status", help="show neurons, models, memory and load from a running gateway")
    status.add_argument("--url", default="http://127.0.0.1:31313", help="the gateway (default %(default)s)")
    status.add_argument("--api-key", help="key for a gateway that requires one")
    status.add_argument("--json", action="store_true", help="print the raw status as JSON")
    status.add_argument(
        "--explain", metavar="MODEL", help="where the next request for MODEL would go, and why"
    )

    make = sub.add_parser("make-model", help="write a random-weight checkpoint (Hugging Face layout)")
    make.add_argument("path", type=Path)
    make.add_argument("--arch", choices=ARCHES, default="qwen3_5")
    make.add_argument("--preset", choices=PRESETS, default="tiny")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32")
    make.add_argument("--vocab-size", type=int, help="override the preset's vocabulary size")
    make.add_argument(
        "--qwen-tokenizer",
        action="store_true",
        help="also write the real Qwen3.5 tokenizer files (use with --vocab-size 248320)",
    )
    return parser


def _serve(args: argparse.Namespace) -> int:
    from cortex.server.config import load_config
    from cortex.server.errors import ConfigError
    from cortex.server.serve import configure_logging, serve_embedded, serve_gateway

    configure_logging()
    try:
        config = load_config(args.config)
        gateway = {
            k: v
            for k, v in (
                ("listen", args.listen),
                ("metrics_listen", args.metrics_listen),
                ("access_log", args.access_log),
            )
            if v
        }
        neuron = {"model_dirs": [str(p) for p in args.models]} if args.models else {}
        if gateway or neuron:
            data = config.model_dump(exclude={"source"})
            data["gateway"].update(gateway)
            data["neuron"].update(neuron)
            config = config.model_validate({**data, "source": config.source})
    except ConfigError as error:
        print(f"cortex serve: {error}", file=sys.stderr)
        return 2
    try:
        if config.neurons:
            serve_gateway(config)
        else:
            serve_embedded(config, demo_preset=args.demo_preset)
    except ConfigError as error:
        print(f"cortex serve: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


def neuron_config_from_args(args: argparse.Namespace) -> NeuronConfig:
    """The [neuron] section of the config file with the command-line flags applied."""
    from pydantic import ValidationError

    from cortex.server.config import NeuronConfig, load_config
    from cortex.server.errors import ConfigError

    base = load_config(args.config).neuron
    updates: dict[str, Any] = {}
    if args.listen:
        updates["listen"] = args.listen
    if args.models:
        updates["model_dirs"] = args.models
    if args.device:
        updates["device"] = args.device
    if args.name:
        updates["name"] = args.name
    if args.access_log:
        updates["access_log"] = True
    try:
        return NeuronConfig.model_validate({**base.model_dump(), **updates})
    except ValidationError as error:
        raise ConfigError(str(error).splitlines()[-1].strip(), key="command line") from None


def _neuron(args: argparse.Namespace) -> int:
    from cortex.server.errors import ConfigError
    from cortex.server.serve import configure_logging, serve_neuron

    try:
        config = neuron_config_from_args(args)
    except ConfigError as error:
        print(f"cortex neuron: {error}", file=sys.stderr)
        return 2
    configure_logging()
    with contextlib.suppress(KeyboardInterrupt):
        serve_neuron(config)
    return 0


def _status(args: argparse.Namespace) -> int:
    import httpx

    from cortex.server.status import fetch_status, render_status

    try:
        status = fetch_status(args.url, api_key=args.api_key, explain=args.explain)
    except httpx.HTTPError as error:
        print(f"cortex status: cannot read {args.url}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(status, indent=2) if args.json or args.explain else render_status(status))
    return 0


def _make_model(args: argparse.Namespace) -> int:
    from cortex.engine.checkpoint import make_model
    from cortex.server.serve import configure_logging

    configure_logging()  # progress: a line on a terminal, else log lines every 10 s

    path = make_model(
        args.path,
        arch=args.arch,
        preset=args.preset,
        seed=args.seed,
        dtype=args.dtype,
        vocab_size=args.vocab_size,
    )
    if args.qwen_tokenizer:
        from cortex.engine.text.qwen import write_qwen_tokenizer_files

        write_qwen_tokenizer_files(path)
    print(f"wrote a random {args.arch} ({args.preset}) checkpoint to {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "version":
        print(f"cortex {__version__}")
        return 0
    if args.command == "serve":
        return _serve(args)
    if args.command == "neuron":
        return _neuron(args)
    if args.command == "status":
        return _status(args)
    if args.command == "make-model":
        return _make_model(args)
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
