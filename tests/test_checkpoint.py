from __future__ import annotations

import pytest
import torch
from torch import nn

from pathseg_core.models.checkpoint import CheckpointError, load_into, load_state_dict, map_keys


class NotAStateDict:
    """A custom class: pickling it makes weights_only=True refuse the file."""

    def __init__(self) -> None:
        self.value = 3


def _sd() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"0.weight": torch.randn(3, 2, generator=g), "0.bias": torch.zeros(3), "1.weight": torch.ones(1, 3)}


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1, bias=False))


# ------------------------------------------------------------------ load_state_dict


def test_plain_state_dict_round_trip(tmp_path):
    sd = _sd()
    torch.save(sd, tmp_path / "w.pth")
    loaded = load_state_dict(tmp_path / "w.pth")
    assert list(loaded) == list(sd)
    assert all(torch.equal(loaded[k], sd[k]) for k in sd)


@pytest.mark.parametrize(
    ("container", "subkey"),
    [
        (lambda sd: {"model": sd}, None),  # SAM2
        (lambda sd: {"state_dict": sd, "epoch": 3, "global_step": 10}, None),  # Lightning
        (lambda sd: {"weights": sd, "meta": {"note": "x"}}, "weights"),
        (lambda sd: {"model": {"a": torch.zeros(1)}, "state_dict": sd}, None),  # state_dict wins
    ],
)
def test_container_unwrapping(tmp_path, container, subkey):
    sd = _sd()
    torch.save(container(sd), tmp_path / "c.ckpt")
    loaded = load_state_dict(tmp_path / "c.ckpt", subkey=subkey)
    assert list(loaded) == list(sd)


def test_a_state_dict_with_a_model_key_is_not_unwrapped(tmp_path):
    torch.save({"model": torch.ones(2), "b": torch.zeros(1)}, tmp_path / "w.pth")
    assert list(load_state_dict(tmp_path / "w.pth")) == ["model", "b"]


def test_missing_subkey(tmp_path):
    torch.save({"model": _sd()}, tmp_path / "c.pth")
    with pytest.raises(CheckpointError, match=r"has no key 'ema' \(top-level keys: model\)"):
        load_state_dict(tmp_path / "c.pth", subkey="ema")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nope\.pth does not exist"):
        load_state_dict(tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match="is a directory"):
        load_state_dict(tmp_path)


@pytest.mark.parametrize("content", [b"this is not a checkpoint", b""])
def test_unreadable_file(tmp_path, content):
    (tmp_path / "bad.pth").write_bytes(content)
    with pytest.raises(CheckpointError, match="cannot be read by torch.load") as err:
        load_state_dict(tmp_path / "bad.pth")
    assert "\n" not in str(err.value)


def test_not_a_mapping(tmp_path):
    torch.save([torch.zeros(1), torch.ones(1)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match=r"holds a list, not a state dict"):
        load_state_dict(tmp_path / "list.pth")


def test_mapping_with_non_tensor_values(tmp_path):
    torch.save({"w": torch.zeros(1), "epoch": 3, "lr": 0.1}, tmp_path / "mixed.pth")
    with pytest.raises(CheckpointError, match=r"2 entries are not str -> Tensor \(epoch, lr\); pass subkey="):
        load_state_dict(tmp_path / "mixed.pth")


def test_weights_only_refusal_names_the_class(tmp_path):
    torch.save({"w": torch.zeros(1), "extra": NotAStateDict()}, tmp_path / "pickle.pth")
    with pytest.raises(CheckpointError) as err:
        load_state_dict(tmp_path / "pickle.pth")
    msg = str(err.value)
    assert "refused by weights_only=True: it contains arbitrary Python objects (" in msg
    assert "NotAStateDict" in msg
    assert "re-save it as a plain state dict" in msg
    assert "\n" not in msg


# ------------------------------------------------------------------ map_keys


def test_map_keys_first_matching_rule_wins_and_drop():
    sd = {"enc.a": torch.zeros(1), "enc.head.b": torch.ones(1), "dec.c": torch.zeros(2), "opt.d": torch.zeros(1)}
    out = map_keys(sd, [("enc.head.", "head."), ("enc.", "image_encoder."), ("dec.", "mask_decoder.")], drop=["opt."])
    assert list(out) == ["image_encoder.a", "head.b", "mask_decoder.c"]
    assert out["head.b"] is sd["enc.head.b"]


def test_map_keys_reports_unmatched():
    sd = {
        "enc.a": torch.zeros(1),
        "x.1": torch.zeros(1),
        "x.2": torch.zeros(1),
        "y": torch.zeros(1),
        "z": torch.zeros(1),
    }
    with pytest.raises(CheckpointError, match=r"^4 checkpoint keys match no mapping rule \(x\.1, x\.2, y, …\)"):
        map_keys(sd, [("enc.", "enc.")])


def test_map_keys_collision():
    with pytest.raises(CheckpointError, match="sends both 'a.w' and 'b.w' to 'm.w'"):
        map_keys({"a.w": torch.zeros(1), "b.w": torch.zeros(1)}, [("a.", "m."), ("b.", "m.")])


# ------------------------------------------------------------------ load_into


def test_load_into_copies_values():
    model = _model()
    sd = _sd()
    assert load_into(model, sd) == []
    assert torch.equal(model[0].weight, sd["0.weight"])
    assert torch.equal(model[1].weight, sd["1.weight"])


def test_load_into_lists_every_problem_in_one_line():
    sd = _sd()
    del sd["0.bias"]
    sd["1.weight"] = torch.zeros(1, 4)
    sd["2.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as err:
        load_into(_model(), sd, source="w.pth")
    assert str(err.value) == (
        "checkpoint w.pth does not fit Sequential: 1 missing (0.bias), 1 unexpected (2.weight), "
        "1 shape mismatches (1.weight: ckpt [1,4] vs model [1,3])"
    )


def test_load_into_shows_the_first_few():
    model = nn.Sequential(*[nn.Linear(1, 1) for _ in range(5)])
    with pytest.raises(CheckpointError, match=r"10 missing \(0\.weight, 0\.bias, 1\.weight, …\)$"):
        load_into(model, {})


def test_load_into_non_strict_tolerates_only_missing():
    model = _model()
    sd = _sd()
    del sd["1.weight"]
    before = model[1].weight.detach().clone()
    assert load_into(model, sd, strict=False) == ["1.weight"]
    assert torch.equal(model[0].weight, sd["0.weight"])
    assert torch.equal(model[1].weight, before)
    sd["extra"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"1 unexpected \(extra\)"):
        load_into(model, sd, strict=False)
