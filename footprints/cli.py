"""The ``footprints`` command (console script ``footprints=footprints.cli:main``).

Subcommands register themselves in :data:`SUBCOMMANDS`: a function that adds its parser to the
sub-parser set and sets ``func`` (``args -> exit code``). To add one::

    def _add_mycmd(sub):
        p = sub.add_parser("mycmd", help="...")
        p.set_defaults(func=_run_mycmd)

    SUBCOMMANDS.append(_add_mycmd)

Exit codes: 0 success, 2 bad usage or unusable input (the message names the file), 1 anything
unexpected.
"""
from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import entry_points
from typing import Callable

from footprints.errors import InputError  # an input a subcommand cannot use: exit 2, message names it

# --- evaluate -------------------------------------------------------------------------------

def _add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="SpaceNet building metric (F1 at IoU > 0.5) of proposals against ground truth",
        description=(
            "SpaceNet building metric: greedy one-to-one matching per image in descending "
            "confidence, a match needs IoU > --iou; TP/FP/FN per image, summed per AOI "
            "(ImageId without its trailing _imgN) and in total. T and P are each a SpaceNet CSV "
            "(ImageId,BuildingId,PolygonWKT_Pix[,...][,Confidence]), a GeoJSON FeatureCollection, "
            "or a directory of GeoJSON files matched by file name. Prints the result as JSON. "
            "With --scot: the SCOT metric of image series (solaris' SpaceNet 7 metric); T and P are "
            "directories with one folder per AOI and one GeoJSON per date (the file stem, in time "
            "order), building ids in an 'id' or 'Id' property."
        ),
    )
    p.add_argument("--truth", required=True, metavar="T", help="ground truth: CSV, GeoJSON or directory")
    p.add_argument("--proposals", required=True, metavar="P", help="proposals: CSV, GeoJSON or directory")
    p.add_argument("--iou", type=float, default=None, help="a match needs IoU > this (default 0.5; 0.25 with --scot)")
    p.add_argument("--scot", action="store_true",
                   help="SCOT (tracking and change F-beta of image series) instead of the SpaceNet F1")
    p.add_argument("--beta", type=float, default=None, help="with --scot: the F-beta weight of tracking over change (default 2: tracking counts more)")
    p.add_argument("--min-area", type=float, default=None, metavar="A",
                   help="ground truth kept if area >= A, proposals if area > A, in the files' units "
                        "(default: 20 on SpaceNet CSV truth, 0 on GeoJSON)")
    p.add_argument("--class-field", metavar="NAME", default="",
                   help="building types: the truth's class property (GeoJSON) or column (CSV), also read from the "
                        "proposals (or their 'class'); adds by_class and class_mean_f1 (a match needs the same class)")
    p.add_argument("--out", metavar="metrics.json", help="also write the JSON here (atomically)")
    p.add_argument("--per-image-csv", metavar="CSV", help="also write one row per image here")
    p.add_argument("--quiet", action="store_true", help="do not list row-level input problems on stderr")
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args) -> int:
    if args.scot:
        return _run_scot(args)
    if args.beta is not None:
        raise InputError("--beta applies to --scot only")
    from footprints import evalio as ev  # noqa: PLC0415 - heavy (pandas, shapely): `footprints --help` stays fast

    problems: list = []
    iou = 0.5 if args.iou is None else args.iou
    result = ev.evaluate_files(args.truth, args.proposals, iou=iou, min_area=args.min_area,
                               problems=problems, class_field=args.class_field)
    if problems and not args.quiet:
        shown = problems[:50]
        for pr in shown:
            print(f"footprints evaluate: warning: {pr}", file=sys.stderr)
        if len(problems) > len(shown):
            print(f"footprints evaluate: warning: ... and {len(problems) - len(shown)} more "
                  f"(all listed under \"problems\" in the JSON)", file=sys.stderr)
    text = ev.result_json(result)
    if args.out or args.per_image_csv:
        ev.write_report(result, args.out, args.per_image_csv)
    sys.stdout.write(text)
    return 0


def _run_scot(args) -> int:
    """``evaluate --scot``: SCOT of two directories of AOI folders, as JSON."""
    from footprints import atomic, scot, scotio  # noqa: PLC0415 - heavy (shapely, scipy): `footprints --help` stays fast

    if args.min_area is not None or args.per_image_csv or args.class_field:
        raise InputError("--min-area, --per-image-csv and --class-field apply to the SpaceNet F1, not to --scot")
    result = scotio.scot_dirs(args.truth, args.proposals,
                              iou=scot.DEFAULT_IOU if args.iou is None else args.iou,
                              beta=scot.DEFAULT_BETA if args.beta is None else args.beta)
    if "skipped" in result and not args.quiet:
        for aoi, why in result["skipped"].items():
            print(f"footprints evaluate: warning: AOI {aoi} not scored: {why}", file=sys.stderr)
    text = json.dumps(result, indent=2) + "\n"
    if args.out:
        atomic.write_text(args.out, text)
    sys.stdout.write(text)
    return 0


SUBCOMMANDS: list[Callable] = [_add_evaluate]

# --- commands of other layers ---------------------------------------------------------------
# `footprints serve` needs the Keras predictor (models/), which this library never imports. Such
# commands register as entry points of the group below (setup.py: ``serve =
# models.service:main``); `footprints <name> ARGS` loads the entry point only when it runs and
# hands it ARGS (``main(argv) -> exit code``), so `footprints --help` and `footprints evaluate`
# stay fast and the layers keep their one-way arrows.
PLUGIN_GROUP = "footprints.commands"
PLUGIN_HELP = {"serve": "HTTP prediction service: POST /predict, GET /buildings, GET /health, map page "
                        "(`footprints serve --help`)"}


def plugins() -> dict:
    """{command: entry point} of the installed ``footprints.commands`` entry points."""
    return {ep.name: ep for ep in entry_points(group=PLUGIN_GROUP)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="footprints", description="building footprints from satellite imagery")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    sub.required = True
    for add in SUBCOMMANDS:
        add(sub)
    for name, ep in sorted(plugins().items()):
        sub.add_parser(name, help=PLUGIN_HELP.get(name, f"(from {ep.value})"), add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    found = plugins()
    if argv and argv[0] in found:
        return int(found[argv[0]].load()(argv[1:]) or 0)
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on bad usage
    try:
        return int(args.func(args) or 0)
    except InputError as e:
        print(f"footprints {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"footprints {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
