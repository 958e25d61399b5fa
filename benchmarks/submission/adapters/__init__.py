"""Per-task pieces of ``matcv submit``: see ``matcv.benchmarks.submission.models``."""
