"""``visivo``: the VisIVO compute server from the shell.

FILE is a path on the server, inside its data roots (relative paths start at the first root).
The token comes from --token, $VISIVO_TOKEN or ~/.visivo_token; the server from --url or
$VISIVO_URL (default http://127.0.0.1:8000).

exit codes: 0 ok; 1 the server refused the request or the task failed (its message is printed);
2 usage (bad options or values, output file exists); 3 the server is unreachable or rejected the
token; 4 the output file could not be written; 130 interrupted (Ctrl-C; a running task is
cancelled on the server).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from visivo_client import cli_commands as commands
from visivo_client import cli_regions
from visivo_client.client import Client
from visivo_client.errors import VisivoAuthError, VisivoConnectionError, VisivoError

EXIT_OK, EXIT_SERVER, EXIT_USAGE, EXIT_CONNECTION, EXIT_OUTPUT, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection and output")
    group.add_argument("--url", help="server URL (default $VISIVO_URL or http://127.0.0.1:8000)")
    group.add_argument("--token", help="API token (default $VISIVO_TOKEN or ~/.visivo_token)")
    group.add_argument("--json", action="store_true", help="print the result as JSON")
    group.add_argument("-q", "--no-progress", dest="progress", action="store_false",
                       help="no progress bar on long work")
    return common


def _output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", required=True, metavar="OUT.fits", help="FITS file to write (local)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT.fits if it exists")


def build_parser() -> argparse.ArgumentParser:
    """The ``visivo`` argument parser (one sub-command per operation)."""
    parser = argparse.ArgumentParser(prog="visivo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = [_common()]

    def add(name: str, func: Callable, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=common, help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    add("health", commands.health, "server liveness, backend, devices, slots and counters")
    add("ls", commands.ls, "list a server directory (default: the first data root)").add_argument(
        "path", nargs="?", metavar="PATH", help="directory on the server")
    add("header", commands.header, "primary FITS header of a server file").add_argument("file", metavar="FILE")
    add("open", commands.open_, "open a FITS image/cube and show its geometry, units and WCS").add_argument(
        "file", metavar="FILE")

    p = add("moment", commands.moment, "moment map(s) of a cube, written as FITS with its 2-D WCS")
    p.add_argument("file", metavar="FILE")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--order", type=int, help="moment order (reference: 0,1,2,...; casa: -1..11)")
    which.add_argument("--orders", metavar="K,K,...", help="several orders in one pass: one multi-extension FITS "
                                                           "(MOM<k>, and SIG<k> with --uncertainty)")
    p.add_argument("--uncertainty", action="store_true",
                   help="propagated 1-sigma maps of orders 0-2 (noise: --rms, else estimated per channel)")
    p.add_argument("--channels", metavar="START:END", help="inclusive channel range (default all)")
    p.add_argument("--convention", choices=["reference", "casa"], default="reference",
                   help="moment definitions and numbering (default reference)")
    p.add_argument("--threshold", type=float, help="use voxels >= this value (BUNIT)")
    p.add_argument("--rms", type=float, help="noise level: threshold = snr*rms when --threshold is not given")
    p.add_argument("--rest-freq", type=float, metavar="HZ", help="rest frequency for velocities of FREQ axes")
    _output(p)

    p = add("linewidth", commands.linewidth, "line-width map (Gaussian FWHM or equivalent width) as FITS")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--channels", metavar="START:END", help="inclusive channel range (default all)")
    p.add_argument("--map", choices=["fwhm", "ew"], default="fwhm", help="which map to write (default fwhm)")
    p.add_argument("--threshold", type=float, help="mask voxels below this value (BUNIT)")
    p.add_argument("--snr", type=float, help="SNR cut of the fit (server default 3; 0 disables)")
    p.add_argument("--rest-freq", type=float, metavar="HZ", help="rest frequency for velocities of FREQ axes")
    _output(p)

    p = add("pv", commands.pv, "position-velocity diagram along a polyline, as FITS (arcsec x km/s)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--path", required=True, metavar="X0,Y0:X1,Y1[:...]",
                   help="vertices: 0-based pixels, or RA,Dec degrees with --world (use --path=... for negatives)")
    p.add_argument("--width", type=int, default=3, help="width across the path in pixels (default 3)")
    p.add_argument("--world", action="store_true", help="--path vertices are RA,Dec in degrees")
    p.add_argument("--channels", metavar="START:END", help="inclusive channel range (default all)")
    p.add_argument("--spatial-bin", type=int, default=1, metavar="N", help="average N samples along the path")
    p.add_argument("--spectral-bin", type=int, default=1, metavar="N", help="average N channels")
    _output(p)

    p = add("baseline", commands.baseline, "subtract a per-pixel spectral baseline (new cube on the server)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--line-free", required=True, metavar="A:B,C:D", help="line-free channel ranges (inclusive)")
    p.add_argument("--order", type=int, default=1, help="polynomial order (default 1)")
    p.add_argument("--method", choices=["polynomial", "median"], default="polynomial")
    p.add_argument("--channels", metavar="START:END", help="channel range of the output (default all)")

    p = add("noise", commands.noise, "per-channel MAD and sigma = 1.4826*MAD")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--channels", metavar="START:END", help="inclusive channel range (default all)")
    p.add_argument("--box", metavar="X0:X1,Y0:Y1", help="inclusive pixel region (default the whole plane)")

    p = add("imstat", commands.imstat, "CASA imstat statistics of an image (JS9 analysis API)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--region", help="DS9-style region in 1-based pixels, e.g. 'circle(128,128,20)'")
    p.add_argument("--engine", choices=["native", "casa"], help="analysis engine (default the server's)")

    p = add("region-spectrum", cli_regions.region_spectrum, "sum and mean spectrum in each DS9/CRTF region")
    cli_regions.add_region_arguments(p)
    p = add("region-stats", cli_regions.region_stats, "CASA imstat statistics in each DS9/CRTF region of a cube")
    cli_regions.add_region_arguments(p)

    p = add("tasks", commands.tasks, "list the server's tasks, show one, or cancel one")
    p.add_argument("task_id", nargs="?", metavar="TASK_ID")
    p.add_argument("--cancel", action="store_true", help="cancel and remove TASK_ID")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code (see the module docstring)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with Client(args.url, args.token, progress=args.progress) as client:
            return args.func(client, args)
    except commands.UsageError as exc:
        parser.exit(EXIT_USAGE, f"visivo {args.command}: error: {exc}\n")
    except (VisivoConnectionError, VisivoAuthError) as exc:
        print(f"visivo {args.command}: {exc}", file=sys.stderr)
        return EXIT_CONNECTION
    except VisivoError as exc:
        print(f"visivo {args.command}: the server said: {exc}", file=sys.stderr)
        return EXIT_SERVER
    except commands.OutputError as exc:
        print(f"visivo {args.command}: {exc}", file=sys.stderr)
        return EXIT_OUTPUT
    except KeyboardInterrupt:
        print(f"visivo {args.command}: interrupted (any running task was cancelled on the server)", file=sys.stderr)
        return EXIT_INTERRUPTED
    return EXIT_OK


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
