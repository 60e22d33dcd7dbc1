"""`python -m rayft ...` (the form used in `ray job submit` entrypoints)."""

from rayft.cli import main

raise SystemExit(main())
