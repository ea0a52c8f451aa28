"""``python -m cloacina``: the command line (see :mod:`cloacina.cli`)."""

from cloacina.cli import main

raise SystemExit(main())
