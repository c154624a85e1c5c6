"""`noisekit`: the command line. Thin: it parses, calls the library and writes files.

One module per subcommand, each importing only `common`; a user mistake is one line on stderr and exit status
2, never a traceback.
"""

import argparse
import os
import sys

from ..version import __version__
from . import demo, generate, library, replay, report, schedule, search
from .common import UserError, quiet_libraries

COMMANDS = (generate, search, demo, replay, report, library, schedule)


def build_parser():
    parser = argparse.ArgumentParser(prog="noisekit", description="The initial noise of diffusion as a tool.")
    parser.add_argument("--version", action="version", version=f"noisekit {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.register(commands)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 0
    quiet_libraries()
    try:
        status = args.run(args)
    except BrokenPipeError:  # the reader of stdout stopped early (`| head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (UserError, ValueError, FileNotFoundError) as error:
        print(f"noisekit {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # disk full, a folder vanished: the path and the reason, in one line
        print(f"noisekit {args.command}: error: {error.strerror or error} ({error.filename})", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"noisekit {args.command}: error: out of memory; use a smaller --batch_size, size or budget.",
              file=sys.stderr)
        return 2
    except RuntimeError as error:  # torch's CPU and CUDA allocators raise RuntimeError, not MemoryError
        if not _out_of_memory(error):
            raise
        print(f"noisekit {args.command}: error: out of memory{_allocation(error)}; use a smaller --batch_size, "
              "size or budget.", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"noisekit {args.command}: interrupted.", file=sys.stderr)
        return 130
    return status if isinstance(status, int) else 0


def _out_of_memory(error):
    text = str(error)
    return "DefaultCPUAllocator" in text or "out of memory" in text.lower() or "not enough memory" in text.lower()


def _allocation(error):
    import re

    match = re.search(r"tried to allocate ([\d.]+ ?\w+)", str(error), re.IGNORECASE)
    return f" (torch tried to allocate {match.group(1)})" if match else ""
