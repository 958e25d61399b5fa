"""Per-task pieces of ``matcv submit``: see ``benchmarks.submission_models``."""
