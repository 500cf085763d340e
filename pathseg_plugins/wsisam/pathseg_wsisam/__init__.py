"""pathseg-wsisam: WSI-SAM (Liu et al., 2024), multi-resolution SAM for whole-slide images."""
