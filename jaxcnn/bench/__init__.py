"""jaxcnn's benchmarks: ``jaxcnn bench`` / ``python -m jaxcnn.bench`` (see benchmarks/README.md in the
repository, with the recorded results). Never run as timed tests.

They ship inside the package so that ``jaxcnn bench`` runs wherever jaxcnn is installed (a cloud GPU or
TPU host included); they import the library, and the library imports them only when ``jaxcnn bench``
runs.
"""
