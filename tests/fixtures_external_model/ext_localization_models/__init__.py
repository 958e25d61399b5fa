"""An external localization model package (not part of matcv): see nets.py."""
