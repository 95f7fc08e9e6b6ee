"""`python -m resgraph.train` (and `torchrun -m resgraph.train`) run the trainer's commands."""

from resgraph.train.cli import main

raise SystemExit(main())
