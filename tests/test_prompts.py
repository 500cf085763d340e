import pytest
import torch

import pathseg_core  # noqa: F401  (arms the torchvision fallback first)
from pathseg_core.prompts import (
    PRESETS,
    PromptSampler,
    PromptSimulationError,
    box_from_mask,
    eval_generator,
    extract_objects,
    jitter_boxes,
    noisy_mask_prompt,
    sample_points,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _label_map() -> torch.Tensor:
    """12x12 hand-drawn map.

    class 1: a 3x3 square at rows 0-2, cols 0-2 plus a 2x2 square at rows 3-4, cols 3-4
             touching it only diagonally (one 8-connected component, 13 px), and a 2x3
             block at rows 8-9, cols 0-2 (6 px);
    class 2: a 4x4 square at rows 6-9, cols 6-9 (16 px), and a single pixel at (0, 11);
    255:     column 11, rows 4-11 (ignored, never an object).
    """
    lab = torch.zeros(12, 12, dtype=torch.long)
    lab[0:3, 0:3] = 1
    lab[3:5, 3:5] = 1
    lab[8:10, 0:3] = 1
    lab[6:10, 6:10] = 2
    lab[0, 11] = 2
    lab[4:12, 11] = 255
    return lab


def test_extract_components_hand_drawn():
    masks, ids = extract_objects(_label_map(), mode="components", min_area=1)
    assert ids.tolist() == [1, 1, 2, 2]
    assert masks.dtype == torch.bool and masks.shape == (4, 12, 12)
    assert [int(m.sum()) for m in masks] == [13, 6, 1, 16]  # class 2's pixel at (0, 11) comes first
    assert masks[0, 4, 4] and masks[0, 0, 0]  # the diagonal touch joins the two squares
    # min_area 6 drops the single pixel; min_area 7 also the 2x3 block
    assert extract_objects(_label_map(), min_area=6)[1].tolist() == [1, 1, 2]
    assert extract_objects(_label_map(), min_area=7)[1].tolist() == [1, 2]
    # classes filter
    assert extract_objects(_label_map(), classes=[2], min_area=1)[1].tolist() == [2, 2]


def test_extract_classes_mode():
    masks, ids = extract_objects(_label_map(), mode="classes", min_area=1)
    assert ids.tolist() == [1, 2]
    assert [int(m.sum()) for m in masks] == [19, 17]
    assert not masks[:, 4:, 11].any()  # ignore pixels belong to no object


def test_extract_max_objects():
    lab = _label_map()
    largest = extract_objects(lab, min_area=1, max_objects=2)[0]
    assert sorted(int(m.sum()) for m in largest) == [13, 16]
    a = extract_objects(lab, min_area=1, max_objects=2, generator=_gen(3))[0]
    b = extract_objects(lab, min_area=1, max_objects=2, generator=_gen(3))[0]
    assert torch.equal(a, b)
    picks = {
        tuple(int(m.sum()) for m in extract_objects(lab, min_area=1, max_objects=2, generator=_gen(s))[0])
        for s in range(20)
    }
    assert len(picks) > 1  # the subset is random across seeds
    empty = extract_objects(torch.zeros(5, 5, dtype=torch.long))
    assert empty[0].shape == (0, 5, 5) and empty[1].shape == (0,)


def test_box_from_mask_pixel_edges():
    m = torch.zeros(10, 12, dtype=torch.bool)
    m[2:5, 3:9] = True  # rows 2-4, cols 3-8
    assert box_from_mask(m).tolist() == [3.0, 2.0, 9.0, 5.0]
    single = torch.zeros(10, 12, dtype=torch.bool)
    single[9, 11] = True
    boxes = box_from_mask(torch.stack([m, single]))
    assert boxes.tolist() == [[3.0, 2.0, 9.0, 5.0], [11.0, 9.0, 12.0, 10.0]]
    with pytest.raises(PromptSimulationError, match="empty"):
        box_from_mask(torch.zeros(4, 4, dtype=torch.bool))


def test_jitter_zero_is_tight_and_bounds_hold():
    boxes = torch.tensor([[400.0, 300.0, 600.0, 340.0]] * 500)  # w 200, h 40, centre (500, 320)
    assert torch.equal(jitter_boxes(boxes, 0.0, _gen(), (1024, 1024)), boxes)
    out = jitter_boxes(boxes, 0.2, _gen(), (1024, 1024))
    cx, cy = (out[:, 0] + out[:, 2]) / 2, (out[:, 1] + out[:, 3]) / 2
    w, h = out[:, 2] - out[:, 0], out[:, 3] - out[:, 1]
    assert (cx - 500).abs().max() <= 0.2 * 200 / 2 + 1e-4  # centre moves at most rel·w/2
    assert (cy - 320).abs().max() <= 0.2 * 40 / 2 + 1e-4
    assert (w - 200).abs().max() <= 0.2 * 200 + 1e-4  # size changes at most rel·w
    assert (h - 40).abs().max() <= 0.2 * 40 + 1e-4
    assert (cx - 500).abs().max() > 0.5 * 0.2 * 100  # and the noise really spans the range
    assert (w - 200).abs().max() > 0.5 * 0.2 * 200
    border = jitter_boxes(torch.tensor([[0.0, 0.0, 64.0, 64.0]] * 50), 0.5, _gen(), (64, 64))
    assert border.min() >= 0 and border.max() <= 64
    with pytest.raises(PromptSimulationError, match="rel"):
        jitter_boxes(boxes, 1.0, _gen(), (1024, 1024))


def test_sample_points_inside_and_outside():
    m = torch.zeros(20, 30, dtype=torch.bool)
    m[5:10, 10:20] = True
    region = torch.zeros_like(m)
    region[0:15, 5:25] = True
    pts, lbl = sample_points(m, 5, 3, _gen(), neg_region=region)
    assert pts.shape == (8, 2) and lbl.tolist() == [1] * 5 + [0] * 3
    x, y = pts[:, 0].long(), pts[:, 1].long()
    assert m[y[:5], x[:5]].all()  # xy = (col, row)
    assert not m[y[5:], x[5:]].any() and region[y[5:], x[5:]].all()
    assert len({tuple(p) for p in pts[:5].tolist()}) == 5  # no repeats when the object is big enough


def test_sample_points_small_object_and_no_negatives():
    m = torch.zeros(8, 8, dtype=torch.bool)
    m[3, 4] = m[3, 5] = True
    pts, lbl = sample_points(m, 6, 0, _gen())
    assert pts.shape == (6, 2) and (lbl == 1).all()
    assert m[pts[:, 1].long(), pts[:, 0].long()].all()  # drawn with replacement, all inside
    full = torch.ones(4, 4, dtype=torch.bool)
    pts, lbl = sample_points(full, 1, 2, _gen())
    assert lbl.tolist() == [1, -1, -1]  # nowhere for negatives: padding


def test_noisy_mask_prompt_near_object():
    yy, xx = torch.meshgrid(torch.arange(512), torch.arange(512), indexing="ij")
    disc = (yy - 256) ** 2 + (xx - 240) ** 2 < 120**2
    clean = noisy_mask_prompt(disc, 256, _gen(), sigma=0.0)
    assert clean.shape == (1, 256, 256) and set(clean.unique().tolist()) == {-8.0, 8.0}
    clean_fg = clean[0] > 0
    noisy = noisy_mask_prompt(disc, 256, _gen(), sigma=1.0)
    fg = noisy[0] > 0
    iou = (fg & clean_fg).sum() / (fg | clean_fg).sum()
    assert iou > 0.9 and not torch.equal(fg, clean_fg)
    # changes stay within the boundary band: radius 60 at 256, band 3 px in the max-norm
    # (a 7x7 square window) reaches 3·√2 ≈ 4.2 px, plus up to 1 px of rasterisation
    changed = torch.nonzero(fg != clean_fg).float() + 0.5
    r = ((changed[:, 0] - 128) ** 2 + (changed[:, 1] - 120) ** 2).sqrt()
    assert ((r - 60).abs() <= 5.3).all()


def test_noisy_mask_prompt_non_square_layout():
    m = torch.ones(128, 256, dtype=torch.bool)  # wide image: longest side -> 256, pad bottom
    out = noisy_mask_prompt(m, 256, _gen(), sigma=0.0, logit_value=5.0)
    assert (out[0, :128] == 5.0).all() and (out[0, 128:] == -5.0).all()


def test_sampler_shapes_padding_and_targets():
    lab = torch.zeros(3, 32, 32, dtype=torch.long)
    lab[0, 2:8, 2:8] = 1
    lab[0, 20:30, 20:26] = 2
    lab[0, 20:30, 2:6] = 1
    lab[1, 10:20, 10:20] = 1
    # image 2 has no object
    for mode in ("box", "points", "mask"):
        prompts, targets = PromptSampler(mode=mode, n_pos=2, n_neg=1)(lab, generator=_gen())
        prompts.validate(3, (32, 32))
        assert prompts.valid.tolist() == [[True, True, True], [True, False, False], [False, False, False]]
        assert targets.masks.shape == (3, 3, 32, 32) and targets.masks.dtype == torch.float32
        assert targets.masks[~prompts.valid].sum() == 0
        assert torch.equal(targets.masks[1, 0].bool(), lab[1] == 1)
        assert (prompts.boxes is not None) == (mode == "box")
        assert (prompts.points is not None) == (mode == "points")
        assert (prompts.masks is not None) == (mode == "mask")
    prompts, _ = PromptSampler(mode="points", n_pos=2, n_neg=1)(lab, generator=_gen())
    assert prompts.points.shape == (3, 3, 3, 2) and prompts.point_labels.shape == (3, 3, 3)
    assert (prompts.point_labels[~prompts.valid] == -1).all()
    prompts, _ = PromptSampler(mode="mask", mask_size=64)(lab, generator=_gen())
    assert prompts.masks.shape == (3, 3, 1, 64, 64)
    empty, targets = PromptSampler()(torch.zeros(2, 16, 16, dtype=torch.long))
    assert empty.boxes.shape == (2, 1, 4) and not empty.valid.any() and targets.masks.shape == (2, 1, 16, 16)


def test_sampler_boxes_tight_and_points_inside():
    lab = torch.zeros(2, 40, 40, dtype=torch.long)
    lab[0, 3:9, 5:17] = 1
    lab[0, 20:35, 20:30] = 1
    lab[1, 0:40, 30:40] = 2
    prompts, targets = PromptSampler(mode="box")(lab, generator=_gen())
    v = prompts.valid
    assert torch.equal(prompts.boxes[v], box_from_mask(targets.masks[v].bool()))
    prompts, targets = PromptSampler(mode="points", n_pos=4, n_neg=2, neg_in_box=False)(lab, generator=_gen())
    for b, n in torch.nonzero(prompts.valid).tolist():
        pts, lbl = prompts.points[b, n].long(), prompts.point_labels[b, n]
        inside = targets.masks[b, n][pts[:, 1], pts[:, 0]]
        assert (inside[lbl == 1] == 1).all() and (inside[lbl == 0] == 0).all()


def test_sampler_negatives_in_box_avoid_ignore():
    lab = torch.full((1, 20, 20), 255, dtype=torch.long)
    lab[0, 5:15, 5:15] = 0
    lab[0, 7:13, 7:13] = 1
    lab[0, 7, 7] = 0  # a background notch inside the object's box
    prompts, _ = PromptSampler(mode="points", n_pos=1, n_neg=4, neg_in_box=True, min_area=1)(lab, generator=_gen())
    neg = prompts.points[0, 0][prompts.point_labels[0, 0] == 0].long()
    assert neg.shape[0] == 4 and (neg == 7).all()  # the only background pixel in the box


def test_sampler_deterministic_per_seed():
    lab = torch.zeros(2, 48, 48, dtype=torch.long)
    lab[0, 5:25, 5:30] = 1
    lab[1, 10:40, 20:45] = 2
    sampler = PromptSampler(mode="points", n_pos=3, n_neg=2)
    a, _ = sampler(lab, generator=eval_generator(7, 3))
    b, _ = sampler(lab, generator=eval_generator(7, 3))
    c, _ = sampler(lab, generator=eval_generator(7, 4))
    d, _ = sampler(lab, generator=eval_generator(8, 3))
    assert torch.equal(a.points, b.points) and torch.equal(a.point_labels, b.point_labels)
    assert not torch.equal(a.points, c.points) and not torch.equal(a.points, d.points)
    box = PromptSampler(mode="box", box_jitter=0.2)
    assert torch.equal(box(lab, generator=_gen(1))[0].boxes, box(lab, generator=_gen(1))[0].boxes)
    assert not torch.equal(box(lab, generator=_gen(1))[0].boxes, box(lab, generator=_gen(2))[0].boxes)
    # the sampler's own generator: same seed, same sequence
    s1, s2 = PromptSampler(mode="box", box_jitter=0.2, seed=5), PromptSampler(mode="box", box_jitter=0.2, seed=5)
    assert torch.equal(s1(lab)[0].boxes, s2(lab)[0].boxes)
    assert torch.equal(s1(lab)[0].boxes, s2(lab)[0].boxes)


def test_sampler_mixed_draws_every_kind():
    lab = torch.zeros(1, 32, 32, dtype=torch.long)
    lab[0, 4:20, 4:20] = 1
    sampler = PromptSampler(mode="mixed", n_pos=2, mask_size=32, seed=0)
    kinds = set()
    for _ in range(20):
        p, _ = sampler(lab)
        present = tuple(k for k in ("boxes", "points", "masks") if getattr(p, k) is not None)
        assert len(present) == 1
        kinds.add(present[0])
    assert kinds == {"boxes", "points", "masks"}


def test_presets_and_errors():
    for name in PRESETS:
        assert isinstance(PromptSampler.from_preset(name), PromptSampler)
    noisy = PromptSampler.from_preset("noisy_box")
    assert noisy.mode == "box" and noisy.box_jitter == pytest.approx(0.2)
    p10 = PromptSampler.from_preset("points10", seed=3)
    assert (p10.mode, p10.n_pos, p10.n_neg, p10.seed) == ("points", 10, 0, 3)
    with pytest.raises(PromptSimulationError, match="unknown prompt preset"):
        PromptSampler.from_preset("nope")
    with pytest.raises(PromptSimulationError, match="mode"):
        PromptSampler(mode="lasso")  # type: ignore[arg-type]
    with pytest.raises(PromptSimulationError, match="box_jitter"):
        PromptSampler(box_jitter=1.5)
    with pytest.raises(PromptSimulationError, match=r"\[B, H, W\]"):
        PromptSampler()(torch.zeros(4, 4, dtype=torch.long))


def test_sampler_via_jsonargparse_class_path():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_argument("--sampler", type=PromptSampler)
    cfg = parser.parse_args(
        ['--sampler={"class_path": "pathseg_core.prompts.PromptSampler", "init_args": {"mode": "points", "n_pos": 3}}']
    )
    sampler = parser.instantiate_classes(cfg).sampler
    assert isinstance(sampler, PromptSampler) and sampler.mode == "points" and sampler.n_pos == 3
    with pytest.raises(SystemExit):
        parser.parse_args(
            ['--sampler={"class_path": "pathseg_core.prompts.PromptSampler", "init_args": {"mode": "lasso"}}']
        )


def test_sampler_pickles_with_its_generator_state():
    import pickle

    lab = torch.zeros(1, 32, 32, dtype=torch.long)
    lab[0, 4:20, 4:20] = 1
    sampler = PromptSampler(mode="box", box_jitter=0.3, seed=4)
    sampler(lab)  # advance the stream
    clone = pickle.loads(pickle.dumps(sampler))  # as a Lightning checkpoint's hparams would
    assert torch.equal(sampler(lab)[0].boxes, clone(lab)[0].boxes)
