"""Model builders and weight handling: SAM (ViT), checkpoint loading, PEFT adapters.

Submodules are imported on demand (``from pathseg_core.models.sam import build_sam``) so
that importing this package stays cheap.
"""
