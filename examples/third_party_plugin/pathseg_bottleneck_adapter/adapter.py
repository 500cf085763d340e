"""Residual bottleneck adapters attached to a ViT's blocks without renaming their weights."""

from __future__ import annotations

from torch import Tensor, nn


class Bottleneck(nn.Module):
    """``x -> up(GELU(down(x)))``; ``up`` starts at zero so the adapted model starts unchanged."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.down = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.up = nn.Linear(hidden, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return self.up(self.act(self.down(x)))


def attach_adapters(blocks: nn.ModuleList, dim: int, hidden: int) -> nn.ModuleList:
    """Add a bottleneck beside each block's ``mlp`` (output += adapter(input)).

    Forward hooks keep the encoder's own parameter names intact, so official checkpoints
    still load into it. Returns the adapters (register them on the model so they train
    and are saved).
    """
    adapters = nn.ModuleList(Bottleneck(dim, hidden) for _ in blocks)
    for block, adapter in zip(blocks, adapters):
        block.mlp.register_forward_hook(lambda _m, inputs, out, a=adapter: out + a(inputs[0]))
    return adapters


def adapter_parameter_count(dim: int, hidden: int, depth: int) -> int:
    """Parameters the adapters add: per block ``dim*hidden + hidden + hidden*dim + dim``."""
    return depth * (2 * dim * hidden + hidden + dim)



