"""Turn a training log into a loss table (``loss.csv``) and a loss curve (``loss.png``).

``python -m tools.logparse runs/<name>/log.txt [--csv OUT] [--png OUT]``: the driver's ``log.txt`` or a plain
Caffe log (formats in ``rankiqa.logparse``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rankiqa.errors import InputError, cli_main
from rankiqa.logparse import parse_log, plot, write_csv


@cli_main
def main(argv: list[str] | None = None) -> int:
    """``python -m tools.logparse LOG [--csv OUT] [--png OUT]``: defaults beside the log."""
    parser = argparse.ArgumentParser(prog="python -m tools.logparse", description=__doc__.split("\n")[0])
    parser.add_argument("log", type=Path, help="runs/<name>/log.txt or a Caffe log")
    parser.add_argument("--csv", type=Path, help="output CSV (default: loss.csv beside the log)")
    parser.add_argument("--png", type=Path, help="output PNG (default: loss.png beside the log)")
    args = parser.parse_args(argv)
    table = parse_log(args.log)
    if not table.rows():
        raise InputError("no training or test lines found", args.log)
    csv_path = args.csv or args.log.with_name("loss.csv")
    png_path = args.png or args.log.with_name("loss.png")
    write_csv(table, csv_path)
    plot(table, png_path, title=args.log.parent.name)
    print(f"wrote {csv_path} and {png_path} ({len(table.rows())} rows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
