"""The ``marsam`` command. Subcommands come from the packages that own them.

Each package registers a ``register(subparsers)`` function under the ``marsam.commands``
entry-point group (see pyproject.toml); this keeps segmodels free of imports of the packages
that depend on it. A :class:`MarsamError` becomes one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import entry_points

from .errors import MarsamError, disk_full


def _models(args) -> int:
    from .networks import DEFAULT_INPUT, build_model, list_models
    from .stats import count_params, gflops
    rows = []
    for name in list_models():
        model = build_model(name)
        shape = DEFAULT_INPUT[name]
        rows.append({"name": name, "class": type(model).__name__, "params": count_params(model),
                     "gflops": round(gflops(model, shape), 3), "input": list(shape),
                     "args": model.config()})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"{'name':<16}{'class':<18}{'params':>12}{'GFLOPs':>10}  input")
        for r in rows:
            print(f"{r['name']:<16}{r['class']:<18}{r['params']:>12,}{r['gflops']:>10.2f}  "
                  f"{'x'.join(map(str, r['input']))}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("models", help="list the networks with their size and cost")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_models)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="marsam", description="SAM-assisted labelling and distillation "
                                     "of segmentation models for planetary terrain")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    seen = set()
    for ep in sorted(entry_points(group="marsam.commands"), key=lambda e: e.name):
        if ep.name in seen:
            continue
        seen.add(ep.name)
        try:
            ep.load()(sub)
        except ImportError as e:  # an optional part (e.g. the GUI extra) is not installed
            print(f"marsam: commands of {ep.name} unavailable ({e})", file=sys.stderr)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except MarsamError as e:
        print(f"marsam: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk in a write that does not go through segmodels.atomic
        full = disk_full(e)
        if full is None:
            raise
        print(f"marsam: error: {full}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("marsam: interrupted; finished work was saved", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
