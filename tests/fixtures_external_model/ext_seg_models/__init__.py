"""An external segmentation model package (not part of matcv): see nets.py."""
