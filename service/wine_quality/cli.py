"""The `wine-quality` command: data, train, predict, serve."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from wine_quality import __version__
from wine_quality.app import settings
from wine_quality.core.features import FEATURES
from wine_quality.core.runtime import RUNTIMES

EXIT_OK = 0
EXIT_ERROR = 1  # the artifact cannot be loaded or written
EXIT_BAD_INPUT = 2  # bad data, bad arguments (argparse uses 2 too)
EXIT_GATE_FAILED = 3  # the promoted model did not beat the baseline; nothing written
PREDICT_MAX_ROWS = 1_000_000

DESCRIPTION = """\
Train, check, serve and release a scikit-learn model of wine quality (UCI Wine Quality data).

Typical use:
  wine-quality data --dest data/wine-quality
  wine-quality train --data-dir data/wine-quality --output artifacts/model
  wine-quality predict --model-dir artifacts/model wines.csv
  wine-quality serve
"""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return args.handler(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wine-quality",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(title="commands", dest="command", required=True)
    _add_data(commands)
    _add_train(commands)
    _add_predict(commands)
    _add_serve(commands)
    from wine_quality.training import release

    release.register(commands)  # compare: champion/challenger before a release
    return parser


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


# --------------------------------------------------------------------------- data


def _add_data(commands: argparse._SubParsersAction) -> None:
    from wine_quality.training.data import SHA256, SOURCE_ENV, UCI_BASE_URL, WINES

    checksums = "\n".join(f"  {name}  {digest}" for name, digest in SHA256.items())
    command = commands.add_parser(
        "data",
        formatter_class=_formatter,
        help="download the UCI files (or copy them from a folder) and verify their sha256",
        description="Put winequality-red.csv and winequality-white.csv into --dest, each checked "
        "against its published sha256. A wrong checksum is an error and nothing is "
        "kept.",
        epilog=f"Published checksums:\n{checksums}\n\n"
        "Exit status: 0 ok, 2 missing or corrupt file.",
    )
    command.add_argument(
        "--dest",
        type=Path,
        required=True,
        metavar="DIR",
        help="folder to write the CSV files into (created if missing)",
    )
    command.add_argument(
        "--source",
        metavar="DIR_OR_URL",
        help=f"a local folder holding the files, or a URL prefix; default: env "
        f"{SOURCE_ENV}, else {UCI_BASE_URL}",
    )
    command.add_argument(
        "--wine", choices=(*WINES, "all"), default="all", help="which file to fetch (default: all)"
    )
    command.set_defaults(handler=_run_data)


def _run_data(args: argparse.Namespace) -> int:
    from wine_quality.training.data import WINES, DataError, fetch

    wines = WINES if args.wine == "all" else (args.wine,)
    try:
        paths = fetch(args.dest, args.source, wines)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    for path in paths:
        print(f"{path}: sha256 verified")
    return EXIT_OK


# --------------------------------------------------------------------------- train


def _add_train(commands: argparse._SubParsersAction) -> None:
    from wine_quality.training.data import WINES
    from wine_quality.training.train import BASELINE, CANDIDATES

    command = commands.add_parser(
        "train",
        formatter_class=_formatter,
        help="select, evaluate and gate a model; write the artifact",
        description=(
            "Validate the data, evaluate every candidate with K-fold CV under two protocols\n"
            "(leakage_free: exact duplicates dropped before the 80/20 split;\n"
            "paper: duplicates kept), promote the candidate with the lowest leakage-free CV RMSE\n"
            "and write the artifact (model.joblib, model.onnx, metadata.json, MODEL_CARD.md,\n"
            f"plots/) only if it beats the {BASELINE} baseline on the held-out part\n"
            "(lower RMSE and lower MAE)."
        ),
        epilog="Exit status: 0 artifact written; 2 invalid data or arguments;\n"
        "3 quality gate failed (nothing written); 1 other errors.\n"
        "Progress (candidate, fold, elapsed time) is shown when stderr is a terminal.",
    )
    command.add_argument(
        "--data-dir",
        type=Path,
        required=True,
        metavar="DIR",
        help="folder holding winequality-red.csv / winequality-white.csv",
    )
    command.add_argument(
        "--output",
        type=Path,
        required=True,
        metavar="DIR",
        help="artifact directory to write (replaced atomically), e.g. artifacts/model",
    )
    command.add_argument(
        "--wine", choices=WINES, default="red", help="which wine to model (default: red)"
    )
    command.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the split, the folds and the estimators (default: 0)",
    )
    command.add_argument("--folds", type=int, default=5, help="K of the K-fold CV (default: 5)")
    command.add_argument(
        "--candidates",
        default=",".join(CANDIDATES),
        metavar="NAMES",
        help="comma-separated candidates to select from (default: all of "
        f"{', '.join(CANDIDATES)}); the {BASELINE} baseline is always "
        "evaluated",
    )
    command.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="worker threads for the forests and histogram boosting "
        "(default: 1); a bit-for-bit rerun needs the same value",
    )
    command.add_argument(
        "--interval-level",
        type=float,
        default=0.8,
        metavar="LEVEL",
        help="level of the prediction interval served with every prediction, between 0 and 1 "
        "(default: 0.8); calibrated and measured at training",
    )
    progress = command.add_mutually_exclusive_group()
    progress.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="show progress even when stderr is not a terminal",
    )
    progress.add_argument(
        "--quiet", dest="progress", action="store_false", help="no progress lines, only the summary"
    )
    command.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from wine_quality.core.artifact import ArtifactError
    from wine_quality.training.data import DataError
    from wine_quality.training.train import QualityGateError, TrainConfig, summary, train

    config = TrainConfig(
        data_dir=args.data_dir,
        output=args.output,
        wine=args.wine,
        seed=args.seed,
        folds=args.folds,
        jobs=args.jobs,
        interval_level=args.interval_level,
        candidates=tuple(name.strip() for name in args.candidates.split(",") if name.strip()),
        progress=sys.stderr.isatty() if args.progress is None else args.progress,
    )
    try:
        metadata = train(config)
    except (DataError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except QualityGateError as error:
        print(error.report, file=sys.stderr)
        print(f"error: {error}", file=sys.stderr)
        return EXIT_GATE_FAILED
    except ArtifactError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    print(summary(metadata))
    print(f"artifact written to {args.output}")
    return EXIT_OK


# --------------------------------------------------------------------------- predict


def _add_predict(commands: argparse._SubParsersAction) -> None:
    names = ", ".join(f.name for f in FEATURES)
    command = commands.add_parser(
        "predict",
        formatter_class=_formatter,
        help="predict the quality of wines from a CSV or JSON file",
        description="Load the artifact (verified) and print one predicted grade per input row.",
        epilog=(
            "Input formats (detected from the content):\n"
            "  CSV  a header of feature names (either spelling), ',' or ';' separated;\n"
            "       a 'quality' column is ignored, so a UCI file can be scored as is.\n"
            '  JSON one object {"alcohol": 9.4, ...}, a list of objects, or {"instances": [...]}.\n'
            f"Features: {names}.\n"
            "Exit status: 0 ok, 2 invalid input, 1 the artifact cannot be loaded."
        ),
    )
    command.add_argument("input", metavar="FILE", help="CSV or JSON file; '-' reads stdin")
    command.add_argument(
        "--model-dir",
        type=Path,
        default=Path(settings.raw("WINE_QUALITY_MODEL_DIR")),
        help="artifact directory (default: env WINE_QUALITY_MODEL_DIR, else artifacts/model)",
    )
    command.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default="auto",
        help="inference runtime (default: auto = ONNX when available)",
    )
    command.add_argument(
        "--json",
        action="store_true",
        help='print {"predictions": [...], "model_version": ...} instead of lines',
    )
    command.set_defaults(handler=_run_predict)


def _read_rows(text: str):
    from wine_quality.app.inputs import (
        InputError,
        parse_csv,
        rows_from_json,
        rows_from_records,
        too_many_digits,
    )

    stripped = text.lstrip()
    if stripped.startswith(("{", "[")):
        try:
            payload = json.loads(text)
        except json.JSONDecodeError:
            raise
        except ValueError:  # json's only other refusal: an integer past int()'s digit limit
            raise InputError(400, "malformed_json", f"invalid JSON ({too_many_digits()})") from None
        if isinstance(payload, list):
            return rows_from_records(payload, PREDICT_MAX_ROWS)
        return rows_from_json(payload, PREDICT_MAX_ROWS)[0]
    return parse_csv(text, PREDICT_MAX_ROWS)


def _run_predict(args: argparse.Namespace) -> int:
    from wine_quality.app.inputs import InputError, validate_rows
    from wine_quality.core.artifact import ArtifactError, load_artifact

    source = "<stdin>" if args.input == "-" else args.input
    try:
        if args.input == "-":
            text = sys.stdin.read()
        else:
            text = Path(args.input).read_text(encoding="utf-8")
        rows = _read_rows(text)
        validate_rows(rows)
    except (OSError, UnicodeDecodeError) as error:
        print(f"error: {source}: cannot read ({error})", file=sys.stderr)
        return EXIT_BAD_INPUT
    except json.JSONDecodeError as error:
        print(
            f"error: {source}: invalid JSON ({error.msg} at line {error.lineno})", file=sys.stderr
        )
        return EXIT_BAD_INPUT
    except InputError as error:
        print(f"error: {source}: {error.message}", file=sys.stderr)
        for detail in error.details:
            row = "" if detail["row"] is None else f"row {detail['row']}, "
            field = "" if detail["field"] is None else f"field {detail['field']!r}: "
            print(f"  {row}{field}{detail['problem']}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        model = load_artifact(args.model_dir, args.runtime)
    except ArtifactError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR
    predictions = model.predict(rows)
    if args.json:
        print(
            json.dumps(
                {
                    "predictions": [round(float(p), 6) for p in predictions],
                    "model_version": model.version,
                    "runtime": model.runtime,
                }
            )
        )
    else:
        print("\n".join(f"{p:.4f}" for p in predictions))
    return EXIT_OK


# --------------------------------------------------------------------------- serve


def _add_serve(commands: argparse._SubParsersAction) -> None:
    listing = "\n".join(
        f"  {s.env:<28} {s.help} (default: {s.default or 'empty'})" for s in settings.SETTINGS
    )
    command = commands.add_parser(
        "serve",
        formatter_class=_formatter,
        help="serve the model over HTTP with gunicorn",
        description="Run gunicorn with the project's configuration: "
        "gunicorn -c python:wine_quality.app.gunicorn_conf 'wine_quality.app:create_app()'",
        epilog=f"Configuration (environment variables):\n{listing}",
    )
    command.add_argument(
        "--model-dir", type=Path, help="artifact directory (sets WINE_QUALITY_MODEL_DIR)"
    )
    command.add_argument("--port", type=int, help="TCP port (sets PORT)")
    command.add_argument(
        "--runtime", choices=RUNTIMES, help="inference runtime (sets WINE_QUALITY_RUNTIME)"
    )
    command.set_defaults(handler=_run_serve)


def gunicorn_command() -> list[str]:
    gunicorn = Path(sys.executable).with_name("gunicorn")
    return [
        str(gunicorn),
        "-c",
        "python:wine_quality.app.gunicorn_conf",
        "wine_quality.app:create_app()",
    ]


def _run_serve(args: argparse.Namespace) -> int:
    for env, value in (
        ("WINE_QUALITY_MODEL_DIR", args.model_dir),
        ("PORT", args.port),
        ("WINE_QUALITY_RUNTIME", args.runtime),
    ):
        if value is not None:
            os.environ[env] = str(value)
    command = gunicorn_command()
    if not Path(command[0]).is_file():
        print(
            f"error: {command[0]} not found; install the package with its dependencies",
            file=sys.stderr,
        )
        return EXIT_ERROR
    sys.stdout.flush()
    sys.stderr.flush()
    # Replace this process, so gunicorn is PID 1 in a container and receives the signals itself.
    os.execve(command[0], command, settings.with_malloc_tunable(dict(os.environ)))  # noqa: S606


if __name__ == "__main__":
    sys.exit(main())
