"""Command line: `python -m training {train,evaluate,export,flag,drawn} ...`."""

from __future__ import annotations

import argparse
import sys
import types
import typing
from dataclasses import fields
from typing import Any

from training.config import PRESETS, TrainConfig, with_overrides
from training.dataset_files import DatasetError
from training.export_checks import ExportError


def _flag_type(hint: Any) -> tuple[Any, str | None]:
    """argparse type and nargs for a TrainConfig field's type hint."""
    if typing.get_origin(hint) is tuple:
        return int, "*"
    if isinstance(hint, types.UnionType):  # `X | None`: the flag parses X
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint, None


def add_train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a MIMO classifier")
    p.add_argument("--preset", choices=sorted(PRESETS), default="digits")
    p.add_argument("--resume", help="checkpoint (last.pt) to continue from")
    hints = typing.get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        if f.name == "extra":
            continue
        kind, nargs = _flag_type(hints[f.name])
        p.add_argument(f"--{f.name.replace('_', '-')}", type=kind, nargs=nargs, default=None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_parser(sub)
    from training.drawn import add_drawn_parser
    from training.evaluate import add_evaluate_parser
    from training.export import add_export_parser
    from training.flag import add_flag_parser

    add_evaluate_parser(sub)
    add_export_parser(sub)
    add_flag_parser(sub)
    add_drawn_parser(sub)
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (DatasetError, FileNotFoundError, ExportError) as error:
        # A user's path or name is wrong (the message says which): no traceback.
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "train":
        from training.train import train

        overrides = {
            f.name: getattr(args, f.name) for f in fields(TrainConfig) if f.name != "extra"
        }
        if overrides.get("lr_decay_epochs") is not None:
            overrides["lr_decay_epochs"] = tuple(overrides["lr_decay_epochs"])
        config = with_overrides(PRESETS[args.preset], overrides)
        path = train(config, resume=args.resume)
        print(f"model: {path}")
        return 0
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
