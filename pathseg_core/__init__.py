"""pathseg core: contracts, prompts, models, data, plugins and the CLI for promptable segmentation in pathology."""

from pathseg_core import _torchvision_ops

# Arm the torchvision fallback before anything imports lightning / torchmetrics.
_torchvision_ops.install()

__version__ = "0.1.0"
