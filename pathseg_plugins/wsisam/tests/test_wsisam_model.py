"""WSI-SAM model: shapes, geometry, switches, exact parameter counts, bad input."""

from __future__ import annotations

import pytest
import torch
from pathseg_wsisam.geometry import ContextError, DualPrompts, map_coords, map_masks
from pathseg_wsisam.model import (
    DECODER_DIM,
    EARLY_DIMS,
    FusionBranch,
    TokenAggregator,
    WSISamConfigError,
    branch_parameter_count,
    build_wsisam,
)

import pathseg_core  # noqa: F401  (arms the torchvision CPU fix first)
from pathseg_core.contracts import PromptError, Prompts
from pathseg_core.models.checkpoint import CheckpointError
from pathseg_core.models.sam import build_sam

torch.set_num_threads(1)

#: Trainable parameters of the built models (two branches, sum / avg / max aggregation).
EXPECTED_TRAINABLE = {"tinyvit": 897_024, "vit_b": 2_142_208, "vit_l": 2_666_496, "vit_h": 3_190_784}


def trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _inputs(model: torch.nn.Module, b: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    s = model.image_size
    return torch.rand(b, 3, s, s, generator=g) * 255, torch.rand(b, 3, s, s, generator=g) * 255


@pytest.mark.parametrize("backbone", ["tiny", "tinyvit_tiny"])
def test_encode_decode_shapes(backbone: str) -> None:
    torch.manual_seed(0)
    model = build_wsisam(backbone)
    x, ctx = _inputs(model)
    f = model.encode(x, ctx)
    assert set(f) >= {"embedding", "early", "context_embedding", "context_early", "input_hw"}
    assert f["context_embedding"].shape == f["embedding"].shape
    prompts = Prompts(boxes=torch.tensor([[[2.0, 3, 30, 40], [1, 1, 9, 9]], [[5, 5, 20, 20], [0, 0, 4, 4]]]))
    pred = model.decode(f, prompts)
    side = 4 * model.prompt_encoder.image_embedding_size[0]
    assert pred.mask_logits.shape == (2, 2, side, side)
    assert pred.extras["context_logits"].shape == (2, 2, side, side)
    assert pred.iou_pred.shape == (2, 2)
    # The HR encoder output does not depend on the LR image (one batched encoder call).
    f2 = model.encode(x, ctx.flip(-1))
    assert torch.allclose(f2["embedding"], f["embedding"], atol=1e-5)
    assert not torch.allclose(f2["context_embedding"], f["context_embedding"])


def test_sam_frozen_only_branches_train() -> None:
    model = build_wsisam("tiny")
    names = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert names == {"hr_branch", "lr_branch"}
    assert not model.encoder_is_trainable()


def test_aggregation_hand_values() -> None:
    hr, lr = torch.tensor([[1.0, -2.0, 3.0]]), torch.tensor([[3.0, 2.0, -1.0]])
    assert TokenAggregator("avg", 3)(hr, lr).tolist() == [[2.0, 0.0, 1.0]]
    assert TokenAggregator("sum", 3)(hr, lr).tolist() == [[4.0, 0.0, 2.0]]
    assert TokenAggregator("max", 3)(hr, lr).tolist() == [[3.0, 2.0, 3.0]]
    cat = TokenAggregator("concat_fc", 3)
    with torch.no_grad():
        cat.fc.weight.copy_(torch.cat([torch.eye(3), 2 * torch.eye(3)], dim=1))
        cat.fc.bias.zero_()
    assert cat(hr, lr).tolist() == [[7.0, 2.0, 1.0]]
    assert trainable(build_wsisam("tiny", aggregation="concat_fc")) - trainable(build_wsisam("tiny")) == 2 * 4 * 4 + 4


def test_aggregation_changes_output() -> None:
    outs = {}
    for mode in ("avg", "sum", "max"):
        torch.manual_seed(0)
        model = build_wsisam("tiny", aggregation=mode)
        x, ctx = _inputs(model)
        outs[mode] = model.decode(model.encode(x, ctx), Prompts(boxes=torch.tensor([[[8.0, 8, 60, 70]]] * 2)))
    # sum = 2 x avg exactly (same weights: same seed), max differs.
    assert torch.allclose(outs["sum"].mask_logits, 2 * outs["avg"].mask_logits, atol=1e-5)
    assert not torch.allclose(outs["max"].mask_logits, outs["avg"].mask_logits)


def test_geometry_hand_values() -> None:
    # S = 128, f = 2: u -> u / 2 + 32 (the official box / 2 + 256 at S = 1024).
    box = torch.tensor([[3.0, 5.0, 31.0, 41.0]])
    assert map_coords(box, (128, 128), 2.0).tolist() == [[33.5, 34.5, 47.5, 52.5]]
    assert map_coords(box, (128, 128), 2.0, floor=True).tolist() == [[33.0, 34.0, 47.0, 52.0]]
    assert map_coords(torch.tensor([[1000.0, 0.0]]), (1024, 1024), 2.0).tolist() == [[756.0, 256.0]]
    m = map_masks(torch.ones(1, 4, 4), 2.0, 0.0)
    expected = torch.zeros(1, 4, 4)
    expected[:, 1:3, 1:3] = 1
    assert torch.equal(m, expected)
    with pytest.raises(ContextError, match="square"):
        map_coords(box, (128, 64), 2.0)


def test_switch_floor_context_boxes_only_at_inference() -> None:
    model = build_wsisam("tiny", floor_context_boxes=True)
    prompts = Prompts(boxes=torch.tensor([[[3.0, 5.0, 31.0, 41.0]]]))
    assert model.train().context_prompts(prompts, (128, 128)).boxes.tolist() == [[[33.5, 34.5, 47.5, 52.5]]]
    assert model.eval().context_prompts(prompts, (128, 128)).boxes.tolist() == [[[33.0, 34.0, 47.0, 52.0]]]


def test_switch_add_sam_logits_at_inference() -> None:
    torch.manual_seed(0)
    base = build_wsisam("tiny")
    torch.manual_seed(0)
    added = build_wsisam("tiny", add_sam_logits=True)
    x, ctx = _inputs(base, 1)
    p = Prompts(boxes=torch.tensor([[[10.0, 10, 90, 100]]]))
    with torch.no_grad():
        a, b = base.eval().decode(base.encode(x, ctx), p), added.eval().decode(added.encode(x, ctx), p)
        assert torch.allclose(b.mask_logits, a.mask_logits + a.extras["sam_logits"], atol=1e-5)
        a_t, b_t = base.train().decode(base.encode(x, ctx), p), added.train().decode(added.encode(x, ctx), p)
    assert torch.allclose(a_t.mask_logits, b_t.mask_logits)


def test_given_context_prompts_are_used() -> None:
    torch.manual_seed(0)
    model = build_wsisam("tiny")
    x, ctx = _inputs(model, 1)
    f = model.encode(x, ctx)
    hr = torch.tensor([[[10.0, 10, 90, 100]]])
    mapped = model.decode(f, Prompts(boxes=hr))
    same = model.decode(f, DualPrompts(boxes=hr, context=Prompts(boxes=map_coords(hr, (128, 128), 2.0))))
    other = model.decode(f, DualPrompts(boxes=hr, context=Prompts(boxes=torch.tensor([[[0.0, 0, 20, 20]]]))))
    assert torch.allclose(mapped.mask_logits, same.mask_logits, atol=1e-6)
    assert not torch.allclose(mapped.mask_logits, other.mask_logits)
    # The LR branch feeds the HR mask through the aggregated token.
    assert not torch.allclose(mapped.extras["context_logits"], other.extras["context_logits"])


def test_branch_count_closed_form() -> None:
    for d in (160, 768, 1024, 1280):
        branch = FusionBranch(256, d)
        assert trainable(branch) == branch_parameter_count(256, d) == 1024 * d + 284_672


def _full_size_check(backbone: str) -> None:
    model = build_wsisam(backbone)
    n = trainable(model)
    assert n == EXPECTED_TRAINABLE[backbone] == 2 * branch_parameter_count(DECODER_DIM, EARLY_DIMS[backbone])
    sd = {k: v.clone() for k, v in model.state_dict().items() if "branch" in k}
    fresh = build_wsisam(backbone)
    fresh.load_state_dict(model.state_dict())
    for k, v in sd.items():
        assert torch.equal(fresh.state_dict()[k], v)


def test_full_size_counts_tinyvit() -> None:
    _full_size_check("tinyvit")


def test_full_size_counts_vit_b() -> None:
    _full_size_check("vit_b")


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["vit_l", "vit_h"])
def test_full_size_counts_large(backbone: str) -> None:
    _full_size_check(backbone)


# ---------------------------------------------------------------- bad input, one line each


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg and msg
    return msg


def test_missing_or_wrong_scale_context() -> None:
    model = build_wsisam("tiny")
    x, _ = _inputs(model, 1)
    with pytest.raises(ContextError) as err:
        model.encode(x, None)
    assert "low-resolution" in _one_line(err)
    with pytest.raises(ContextError) as err:
        model.encode(x, x[..., :64, :64])
    assert "must match the HR patch" in _one_line(err)


def test_prompts_outside_patch() -> None:
    model = build_wsisam("tiny")
    x, ctx = _inputs(model, 1)
    f = model.encode(x, ctx)
    with pytest.raises(PromptError) as err:
        model.decode(f, Prompts(boxes=torch.tensor([[[10.0, 10, 400, 90]]])))
    assert "outside" in _one_line(err)
    points = Prompts(points=torch.tensor([[[[300.0, 5.0]]]]), point_labels=torch.ones(1, 1, 1, dtype=torch.long))
    with pytest.raises(PromptError) as err:
        model.decode(f, points)
    assert "points fall outside" in _one_line(err)


def test_unknown_names() -> None:
    with pytest.raises(WSISamConfigError) as err:
        build_wsisam("tiny", aggregation="mean")
    assert "unknown aggregation 'mean'" in _one_line(err)
    with pytest.raises(WSISamConfigError) as err:
        build_wsisam("vit_x")
    assert "unknown backbone" in _one_line(err)


def test_checkpoint_of_another_backbone(tmp_path) -> None:  # noqa: ANN001
    other = build_sam("tiny")
    torch.save(other.state_dict(), tmp_path / "tiny_sam.pth")
    with pytest.raises(CheckpointError) as err:
        build_wsisam("tinyvit_tiny", tmp_path / "tiny_sam.pth")
    assert "tiny_sam.pth" in _one_line(err)
