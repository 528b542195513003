"""Command line: `python -m training {train,evaluate,export,flag,drawn} ...`."""

from __future__ import annotations

import argparse
import sys

from training.dataset_files import DatasetError
from training.export_checks import ExportError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    from training.drawn import add_drawn_parser
    from training.evaluate import add_evaluate_parser
    from training.export import add_export_parser
    from training.flag import add_flag_parser
    from training.train import add_train_parser

    add_train_parser(sub)
    add_evaluate_parser(sub)
    add_export_parser(sub)
    add_flag_parser(sub)
    add_drawn_parser(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (DatasetError, FileNotFoundError, ExportError) as error:
        # A user's path or name is wrong (the message says which): no traceback.
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
