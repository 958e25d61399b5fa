"""An external rating model package (not part of matcv): see nets.py."""
