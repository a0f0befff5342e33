"""`python -m policyload.report`: the subcommands `table` (the default), `compare`, `device`, `noise`,
`history`.

`table` came first and has no name on the command lines in use (tox.ini, the nightly workflow,
the README): `python -m policyload.report out.json`. So when the first argument is neither a
subcommand nor -h/--help, `table` is assumed.

Input the report cannot use is a `ReportError`; `main` prints it as one `error: ...` line on
stderr and exits 2, never a traceback. argparse's own usage errors exit 2 as well.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .gate import compare_runs
from .history import write_history
from .noise import noise_table
from .runs import ReportError, device_folder_name, load_run
from .tables import markdown_table, write_chart
from .thresholds import parse_percent, resolve_thresholds

PROG = "python -m policyload.report"
DEFAULT_COMMAND = "table"
_HELP = ("-h", "--help")
_EPILOG = f"""\
without a command, `{DEFAULT_COMMAND}` is assumed: {PROG} out/bench.json --markdown out/bench.md
'{PROG} COMMAND -h' shows a command's options.

exit codes: 0 fine; 1 (compare) a regression, or the new run lost data: a base case missing
from it, a gated metric missing from a case, no case in common; 2 unusable input: missing,
malformed or truncated JSON, runs from different devices, a case key twice in one run, an
empty base, quick against full runs, different rounds or warm-up rounds, base latency from
stats.median against new latency from the tracker, or a bad command line."""

_COMPARE_EPILOG = """\
Latency is the benchmark's own tracker median (extra_info.median_latency_s), without the other
trackers' bookkeeping; pytest-benchmark's stats.median only for files that lack it.

exit codes:
  0  no regression, nothing lost
  1  a regression; or the new run lost data: a base case missing from it (one that now skips or
     fails too, unless --accept-removed), a gated metric the base has missing from a case, no
     case in common
  2  unusable input: missing, malformed or truncated JSON; runs from different devices (unless
     --allow-different-devices); a case key twice in one run; an empty base; a quick run against
     a full one; a case with different rounds or warm-up rounds; a base latency from stats.median
     against a new one from the tracker; a bad thresholds file or command line"""


def _print_and_write(text: str, path) -> None:
    """Print `text`; write it to `path` as well (its folder made first) when one is given."""
    print(text, end="")
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)


def _table(args) -> int:
    run = load_run(args.json)
    if not run.rows and not run.dpo and not run.train:
        raise ReportError(f"{args.json}: no benchmarks in the file (did every case skip or fail?)")
    _print_and_write(markdown_table(run), args.markdown)
    chart = write_chart(run, args.chart or Path(args.json).with_suffix(".png"))
    print(f"\nchart: {chart}")
    return 0


def _section(title: str, lines: list[str]) -> None:
    print(f"{len(lines)} {title}:")
    for line in lines:
        print(f"  {line}")


def _compare(args) -> int:
    # The file's errors come before the runs' are read: a bad gate configuration is the one to fix first.
    thresholds = resolve_thresholds(
        args.thresholds,
        max_latency_regression=args.max_latency_regression,
        max_memory_regression=args.max_memory_regression,
        latency_floor_s=None if args.latency_floor_ms is None else args.latency_floor_ms / 1000,
    )
    base, new = load_run(args.base), load_run(args.new)
    result = compare_runs(
        base, new, thresholds["max_latency_regression"], thresholds["max_memory_regression"],
        args.allow_different_devices, latency_floor_s=thresholds["latency_floor_s"],
        accept_removed=args.accept_removed,
    )
    for note in result.notes:
        print(f"note: {note}")
    if result.missing_cases:
        _section(
            "case(s) of the base missing from the new run (skipped, failed, renamed or removed; "
            "--accept-removed CASE_KEY if intended)",
            result.missing_cases,
        )
    if result.missing_metrics:
        _section("case(s) missing a gated metric that the base has", result.missing_metrics)
    if not result.common:
        print(f"no case in common: nothing was compared ({len(base.rows)} in base, {len(new.rows)} in new)")
    if result.regressions:
        _section("regression(s)", result.regressions)
    if result.failed:
        return 1
    print(f"no regression in {len(result.common)} common case(s)")
    return 0


def _device(args) -> int:
    print(device_folder_name(load_run(args.json).device))
    return 0


def _noise(args) -> int:
    _print_and_write(noise_table([load_run(path) for path in args.json]), args.markdown)
    return 0


def _history(args) -> int:
    thresholds = resolve_thresholds(args.thresholds)
    path = write_history(args.json, args.html, thresholds)
    print(f"{path}: {len(args.json)} run(s), in time order")
    return 0


def build_parser() -> tuple[argparse.ArgumentParser, frozenset[str]]:
    """(the parser, its subcommands' names). A subcommand sets `handler`, the function that runs it,
    and `command_parser`, itself, to report arguments it does not know."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        usage=f"%(prog)s [{DEFAULT_COMMAND}] JSON [--markdown PATH] [--chart PATH]\n"
        f"       %(prog)s {{compare,device,noise,history}} ...",
        description="Read a `pytest benchmarks --benchmark-json` file: a markdown table, a chart, a comparison.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(title="commands", dest="command", required=True)

    # Each prog is explicit: argparse would derive it from the parent's usage, which names every command.
    # The default command's is the bare PROG, the way it is called.
    table = commands.add_parser(
        "table", prog=PROG, help="markdown table and chart of a run (the default command)",
        description="Markdown table and chart of a benchmark run.",
    )
    table.add_argument("json", help="pytest-benchmark JSON written by `pytest benchmarks --benchmark-json`")
    table.add_argument("--markdown", metavar="PATH", help="also write the table to PATH")
    table.add_argument("--chart", metavar="PATH", help="chart PNG (default: the JSON path with .png)")
    table.set_defaults(handler=_table)

    compare = commands.add_parser(
        "compare", prog=f"{PROG} compare", help="fail (exit 1) on regressions or lost data between two runs",
        description="Fail on regressions between two runs, and on a new run that lost data.",
        epilog=_COMPARE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    compare.add_argument("base")
    compare.add_argument("new")
    compare.add_argument(
        "--thresholds", metavar="TOML",
        help="allowances from this file (max_latency_regression, max_memory_regression, latency_floor_ms); "
        "flags override it",
    )
    compare.add_argument("--max-latency-regression", type=parse_percent, metavar="PCT", help="default 15%%")
    compare.add_argument("--max-memory-regression", type=parse_percent, metavar="PCT", help="default 2%%")
    compare.add_argument(
        "--latency-floor-ms", type=float, metavar="MS",
        help="a latency must also grow by more than this many milliseconds (default 0)",
    )
    compare.add_argument("--allow-different-devices", action="store_true")
    compare.add_argument(
        "--accept-removed", action="append", default=[], metavar="CASE_KEY",
        help="a base case whose absence from the new run is intended (checkpoint/dtype/quantization, "
        "or a glob such as 'qwen2/*'); repeatable; each accepted removal is printed as a note",
    )
    compare.set_defaults(handler=_compare)

    device = commands.add_parser(
        "device", prog=f"{PROG} device", help="a run's device as a folder name (nvidia-h200)",
        description="Print a run's device as a folder name (nvidia-h200).",
    )
    device.add_argument("json")
    device.set_defaults(handler=_device)

    noise = commands.add_parser(
        "noise", prog=f"{PROG} noise", help="run-to-run spread of each case's medians over repeated runs",
        description="Run-to-run spread of each case's medians over repeated runs of the same benchmark.",
    )
    noise.add_argument("json", nargs="+", help="pytest-benchmark JSON files of the same benchmark on the same device")
    noise.add_argument("--markdown", metavar="PATH", help="also write the tables to PATH")
    noise.set_defaults(handler=_noise)

    history = commands.add_parser(
        "history", prog=f"{PROG} history",
        help="one HTML page of many runs: each case across them, the gate's verdicts",
        description="One self-contained HTML page of many runs (sorted by time): per case, latency with the gate's "
        "allowance, outcome and memory against the prediction in each run; the gate's verdict on each run.",
    )
    history.add_argument("json", nargs="+", help="pytest-benchmark JSON files (.json or .json.gz), any order")
    history.add_argument("--html", metavar="PATH", required=True, help="write the page here")
    history.add_argument(
        "--thresholds", metavar="TOML", help="the gate's allowances (benchmarks/thresholds.toml); default: compare's"
    )
    history.set_defaults(handler=_history)
    for command in commands.choices.values():
        command.set_defaults(command_parser=command)
    return parser, frozenset(commands.choices)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser, commands = build_parser()
    if not argv or argv[0] not in {*commands, *_HELP}:
        argv = [DEFAULT_COMMAND, *argv]
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown:  # parse_args would print the top-level usage; the subcommand's is the one that helps
            args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        return args.handler(args)
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head`: not an error of the report
        sys.stderr.close()
        return 0
