"""The installed `qvl` command: the batch commands of `qvl_core.cli` plus `serve`, the web app."""

from __future__ import annotations

import argparse
import sys

from qvl_core import cli


def cmd_serve(ns: argparse.Namespace) -> int:
    from ui.launch import main as serve_main

    return serve_main(ns.rest)


def build_parser() -> argparse.ArgumentParser:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    serve = sub.add_parser("serve", help="run the web app (same flags as app.py)", add_help=False)
    serve.add_argument("rest", nargs=argparse.REMAINDER)
    serve.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    return cli.main(argv, build_parser())


if __name__ == "__main__":
    sys.exit(main())
