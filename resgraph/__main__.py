"""`python -m resgraph` (and `torchrun -m resgraph`) run the CLI."""

from resgraph.cli import main

raise SystemExit(main())
