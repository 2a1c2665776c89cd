"""`python -m mlgate`: the same as the `mlgate` command (the serving image uses it)."""

from mlgate.cli import main

raise SystemExit(main())
