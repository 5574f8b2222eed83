"""``python -m benchmarks [--quick] [--out DIR] [--parts ...] [--repeats N]``: the whole suite (`benchmarks.suite`)."""

from .suite import main

raise SystemExit(main())
