"""The ``datafree`` command line.  Each sub-command mirrors one API function (``datafree.api``): the arguments
are in ``parser.py``, what each command does with them in ``commands.py``; errors end as one line here."""

from __future__ import annotations

import os
import sys
import warnings

from datafree.cli import commands
from datafree.cli.parser import _bits, _exps, build_parser  # noqa: F401  (the parser's value types, for tests)
from datafree.errors import DatafreeError
from datafree.io.atomic import forget_created, remove_empty_created

# sub-command -> what it does with its parsed arguments (demo and models are handled inline)
COMMANDS = {name: getattr(commands, name) for name in
            ("distill", "train", "evaluate", "export", "quantize", "sweep", "prune", "condense")}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.filterwarnings("once")
    warnings.formatwarning = lambda msg, cat, *_a, **_k: f"datafree: warning: {msg}\n"  # one line, no source
    forget_created()
    try:
        if args.cmd in COMMANDS:
            COMMANDS[args.cmd](args)
        elif args.cmd == "demo":
            from datafree.demo import run_demo

            run_demo(args.out, budget=args.budget, seed=args.seed, progress=not args.quiet)
        elif args.cmd == "models":
            from datafree.models import MODELS

            for name, spec in sorted(MODELS.items()):
                print(f"{name:20s} input {spec.input_shape}  classes {spec.num_classes}")
    except DatafreeError as e:
        remove_empty_created()  # a refused input leaves no empty --out behind
        print(f"datafree: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # disk full, permissions, ... : one line, no traceback
        remove_empty_created()
        print(f"datafree: error: {e.strerror or e}: {e.filename or ''}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        resumable = args.cmd in ("distill", "prune")
        print("datafree: interrupted; " + ("the last checkpoint is intact (rerun with --resume)" if resumable else
              "finished files are intact; rerun the command"), file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - a defect or an input no check foresaw: one line, not a traceback
        remove_empty_created()
        if os.environ.get("DATAFREE_DEBUG"):
            raise
        msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        print(f"datafree: error: {type(e).__name__}: {msg} (an unexpected failure: check the inputs; rerun with "
              "DATAFREE_DEBUG=1 for the traceback and report it)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
