"""``resetguard proxy``: run fault-injection proxies from the command line.

Exit codes: 0 after a clean stop (SIGINT/SIGTERM), 1 when a socket cannot be bound,
2 for bad usage (a bad toxic spec, address or configuration file).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from random import Random
from typing import Any

__all__ = ["add_parser", "run"]

_DEFAULT_API = "127.0.0.1:8474"  # Toxiproxy's port, on loopback

_EPILOG = """\
toxic SPEC: TYPE[:STREAM][:KEY=VALUE]...
  STREAM   upstream (client -> server), downstream (server -> client, default) or both
  KEY      the toxic's attributes, plus toxicity=P (0..1) and name=NAME
  times    in the attribute's unit (ms; slicer delay: us) or with a unit: 250ms, 2s, 500us

examples:
  resetguard proxy --listen 127.0.0.1:15432 --upstream 127.0.0.1:5432 \\
      --toxic reset_peer:downstream:timeout=500:toxicity=0.5
  resetguard proxy --listen 127.0.0.1:18080 --upstream 127.0.0.1:8080 \\
      --toxic idle_reset:upstream:idle=2s --toxic latency:both:latency=20ms
  resetguard proxy --config proxies.json          # Toxiproxy's format works too
  resetguard proxy --list-toxics

The control API (Toxiproxy-compatible) listens on 127.0.0.1:8474 unless --api or --no-api.
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "proxy",
        help="fault-injection TCP proxy (Toxiproxy-compatible API)",
        description="Forward TCP connections and inject faults: resets, latency, "
        "truncation, blackholes, idle closes (the keep-alive race).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="address to listen on (default 127.0.0.1:0, a free port, printed at start)",
    )
    parser.add_argument("--upstream", metavar="HOST:PORT", help="address to forward to")
    parser.add_argument("--name", metavar="NAME", help="proxy name for the API (default proxy1)")
    parser.add_argument(
        "--toxic",
        action="append",
        default=[],
        metavar="SPEC",
        help="add a toxic (repeatable), e.g. reset_peer:downstream:timeout=500",
    )
    api = parser.add_mutually_exclusive_group()
    api.add_argument(
        "--api", metavar="HOST:PORT", help=f"control API address (default {_DEFAULT_API})"
    )
    api.add_argument("--no-api", action="store_true", help="do not serve the control API")
    parser.add_argument("--config", metavar="FILE", help="JSON or TOML file of proxies")
    parser.add_argument(
        "--seed", type=int, metavar="N", help="seed for toxicity draws, jitter and slicing"
    )
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop (pip install uvloop)")
    parser.add_argument(
        "--list-toxics", action="store_true", help="list toxic types with their attributes and exit"
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log each connection to stderr: open, toxics that act on it, end as "
        "FIN/RST/timeout with bytes and duration (-v); also toxicity misses (-vv)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    return parser


def _list_toxics() -> str:
    import dataclasses

    from ._toxics import toxic_types

    lines = []
    for name, cls in toxic_types().items():
        attrs = []
        for f in dataclasses.fields(cls):
            if f.name in ("name", "stream", "toxicity"):
                continue
            unit = f.metadata["unit"]
            if f.metadata["choices"]:
                unit = "|".join(f.metadata["choices"])
            required = f.default is dataclasses.MISSING
            default = "required" if required else f"default {f.default}"
            attrs.append(f"{f.name} ({unit}, {default})")
        doc = (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        doc = " ".join(doc.replace("``", "").split())
        lines.append(f"{name}: {', '.join(attrs) or 'no attributes'}\n    {doc}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ..cli import UsageError
    from ._config import Config, ConfigError, ProxyConfig, load_config
    from ._proxy import parse_address
    from ._toxics import Toxic, ToxicError, parse_toxic

    if args.list_toxics:
        print(_list_toxics())
        return 0
    config = Config()
    if args.config:
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
    proxies = list(config.proxies)
    if args.upstream is None and (args.listen or args.toxic or args.name):
        raise UsageError("--listen, --toxic and --name need --upstream HOST:PORT")
    if args.upstream is not None:
        for what, value in (("--upstream", args.upstream), ("--listen", args.listen)):
            if value is None:
                continue
            try:
                parse_address(value, what=what)
            except ValueError as exc:
                raise UsageError(str(exc)) from None
        toxics: list[Toxic] = []
        for spec in args.toxic:
            try:
                toxics.extend(parse_toxic(spec))
            except ToxicError as exc:
                raise UsageError(str(exc)) from None
        names = [t.name for t in toxics]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise UsageError(f"two toxics named {dupes[0]!r}: give one of them name=...")
        name = args.name or "proxy1"
        if any(p.name == name for p in proxies):
            raise UsageError(f"proxy name {name!r} is also in {args.config}: use --name")
        proxies.append(
            ProxyConfig(
                name=name,
                listen=args.listen or "127.0.0.1:0",
                upstream=args.upstream,
                toxics=tuple(toxics),
            )
        )
    if args.no_api:
        api: str | None = None
    elif args.api is not None:
        try:
            parse_address(args.api, what="--api")
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        api = args.api
    elif config.api_given:
        api = config.api
    else:
        api = _DEFAULT_API
    if not proxies and api is None:
        raise UsageError("nothing to do: give --upstream HOST:PORT, --config FILE or an API")

    level = (
        logging.ERROR
        if args.quiet
        else (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    )
    logging.basicConfig(level=level, format="resetguard proxy: %(message)s")
    main = _serve(proxies, api, None if args.seed is None else Random(args.seed), args.quiet)
    if args.uvloop:
        try:
            import uvloop  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            raise UsageError("--uvloop needs uvloop: pip install uvloop") from None
        return int(uvloop.run(main))
    return asyncio.run(main)


async def _serve(proxies: list[Any], api: str | None, rnd: Random | None, quiet: bool) -> int:
    from ._proxy import ProxyError
    from ._server import FaultProxyServer

    server = FaultProxyServer(api=api, random=rnd)
    try:
        await server.astart()
    except ProxyError as exc:
        sys.stderr.write(
            f"resetguard proxy: error: {exc} (choose another with --api or use --no-api)\n"
        )
        return 1
    try:
        for cfg in proxies:
            try:
                proxy = server.create(
                    cfg.upstream,
                    listen=cfg.listen,
                    name=cfg.name,
                    toxics=cfg.toxics,
                    enabled=cfg.enabled,
                )
            except ProxyError as exc:
                sys.stderr.write(f"resetguard proxy: error: proxy {cfg.name}: {exc}\n")
                return 1
            if not quiet:
                toxics = ", ".join(t.to_spec() for t in cfg.toxics) or "no toxics"
                state = "" if cfg.enabled else " (disabled)"
                print(
                    f"resetguard proxy: {proxy.name} {proxy.listen} -> {proxy.upstream}"
                    f" [{toxics}]{state}",
                    flush=True,
                )
        if server.api_url and not quiet:
            print(f"resetguard proxy: API {server.api_url}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        return 0
    finally:
        await server.aclose()
