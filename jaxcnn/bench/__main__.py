"""``python -m jaxcnn.bench [--quick] [--out DIR] [--parts ...] [--repeats N]``: the whole suite."""

from .suite import main

raise SystemExit(main())
