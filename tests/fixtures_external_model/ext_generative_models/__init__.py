"""External generative model package (not part of matcv), for tests/test_submissions_generative.py: see nets.py."""
