"""``python -m api.cli``: the ``ocgate`` command line."""

from api.cli import main

raise SystemExit(main())
