"""jaxcnn benchmarks: `python -m benchmarks` (see benchmarks/README.md). Never run as timed tests."""
