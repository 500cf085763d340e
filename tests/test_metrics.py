import pytest
import torch

import pathseg_core  # noqa: F401  (arms the torchvision fallback first)
from pathseg_core.metrics import MetricsConfigError, build_metrics, select_valid

# Two 2x3 images, 3 classes; pixel (1, 2) of each is ignored (255).
TARGET = torch.tensor([[[0, 1, 1], [2, 2, 255]], [[0, 0, 1], [1, 2, 255]]])
PREDS = torch.tensor([[[0, 1, 2], [2, 0, 1]], [[0, 1, 1], [1, 2, 0]]])
# (target, pred) pairs that count:
#   image 1: (0,0) (1,1) (1,2) (2,2) (2,0)
#     class 0: tp 1 fp 1 fn 0 | class 1: tp 1 fp 0 fn 1 | class 2: tp 1 fp 1 fn 1
#   image 2: (0,0) (0,1) (1,1) (1,1) (2,2)
#     class 0: tp 1 fp 0 fn 1 | class 1: tp 2 fp 1 fn 0 | class 2: tp 1 fp 0 fn 0
#   totals: class 0 tp 2 fp 1 fn 1 | class 1 tp 3 fp 1 fn 1 | class 2 tp 2 fp 1 fn 1
NAMES = ["bg", "gland", "tumour"]


def _values(metrics):
    return {k: float(v) for k, v in metrics.compute().items()}


def test_multiclass_hand_computed_with_background():
    m = build_metrics(3, task="multiclass", class_names=NAMES)
    m.update(PREDS, TARGET)
    v = _values(m)
    assert v["dice_bg"] == pytest.approx(4 / 6)  # 2·2 / (2·2 + 1 + 1)
    assert v["dice_gland"] == pytest.approx(6 / 8)
    assert v["dice_tumour"] == pytest.approx(4 / 6)
    assert v["iou_bg"] == pytest.approx(2 / 4)
    assert v["iou_gland"] == pytest.approx(3 / 5)
    assert v["iou_tumour"] == pytest.approx(2 / 4)
    # micro: tp 7, fp 3, fn 3 -> 14 / 20 = 0.7 = pixel accuracy (7 of 10 counted pixels right)
    assert v["dice_micro"] == pytest.approx(0.7)
    assert v["iou_micro"] == pytest.approx(7 / 13)
    assert v["dice_macro"] == pytest.approx((4 / 6 + 6 / 8 + 4 / 6) / 3)
    assert v["iou_macro"] == pytest.approx((1 / 2 + 3 / 5 + 1 / 2) / 3)
    # per image: image 1 (2/3, 2/3, 1/2), image 2 (2/3, 4/5, 1)
    img1, img2 = (2 / 3 + 2 / 3 + 1 / 2) / 3, (2 / 3 + 4 / 5 + 1) / 3
    assert v["dice_per_image"] == pytest.approx((img1 + img2) / 2)


def test_multiclass_hand_computed_without_background():
    m = build_metrics(3, task="multiclass", class_names=NAMES, include_background=False, prefix="test_")
    m.update(PREDS, TARGET)
    v = _values(m)
    assert "test_dice_bg" not in v and "test_iou_bg" not in v
    # micro over classes 1, 2: tp 5, fp 2, fn 2
    assert v["test_dice_micro"] == pytest.approx(10 / 14)
    assert v["test_iou_micro"] == pytest.approx(5 / 9)
    assert v["test_dice_macro"] == pytest.approx((6 / 8 + 4 / 6) / 2)
    assert v["test_iou_macro"] == pytest.approx((3 / 5 + 1 / 2) / 2)
    assert v["test_dice_gland"] == pytest.approx(6 / 8)
    assert v["test_dice_per_image"] == pytest.approx(((2 / 3 + 1 / 2) / 2 + (4 / 5 + 1) / 2) / 2)


def test_multiclass_accumulates_over_batches_like_one_batch():
    one = build_metrics(3, task="multiclass")
    one.update(PREDS, TARGET)
    split = build_metrics(3, task="multiclass")
    split.update(PREDS[:1], TARGET[:1])
    split.update(PREDS[1:], TARGET[1:])
    assert _values(split) == pytest.approx(_values(one))


def test_matches_stock_torchmetrics_when_all_classes_count():
    from torchmetrics.classification import MulticlassF1Score, MulticlassJaccardIndex  # after pathseg_core

    g = torch.Generator().manual_seed(0)
    preds = torch.randint(0, 4, (3, 16, 16), generator=g)
    target = torch.randint(0, 4, (3, 16, 16), generator=g)
    target[:, :3] = 255
    target[target == 3] = 2  # class 3 only ever predicted: an FP-only class
    v = build_metrics(4, task="multiclass")
    v.update(preds, target)
    v = _values(v)
    for avg in ("micro", "macro"):
        f1 = MulticlassF1Score(4, average=avg, ignore_index=255)(preds, target)
        iou = MulticlassJaccardIndex(4, average=avg, ignore_index=255)(preds, target)
        assert v[f"dice_{avg}"] == pytest.approx(float(f1))
        assert v[f"iou_{avg}"] == pytest.approx(float(iou))
    per_image = MulticlassF1Score(4, average="macro", multidim_average="samplewise", ignore_index=255)
    assert v["dice_per_image"] == pytest.approx(float(per_image(preds, target).mean()))


def test_binary_hand_computed():
    # two prompted objects (2x2), probabilities thresholded at 0.5
    probs = torch.tensor([[[0.9, 0.2], [0.6, 0.1]], [[0.7, 0.9], [0.8, 0.3]]])
    target = torch.tensor([[[1, 1], [0, 0]], [[1, 255], [1, 1]]])
    # object 1: pred [[1,0],[1,0]] vs [[1,1],[0,0]] -> fg tp 1 fp 1 fn 1 (dice 1/2); bg tp 1 fp 1 fn 1
    # object 2: pred [[1,·],[1,0]] vs [[1,·],[1,1]] -> fg tp 2 fp 0 fn 1 (dice 4/5); bg tp 0 fp 1 fn 0
    fg = build_metrics(2, task="binary", include_background=False)
    fg.update(probs, target)
    v = _values(fg)
    assert set(v) == {
        "dice_micro",
        "dice_macro",
        "iou_micro",
        "iou_macro",
        "dice_foreground",
        "iou_foreground",
        "dice_per_image",
    }
    assert v["dice_micro"] == pytest.approx(6 / 9)  # tp 3 fp 1 fn 2
    assert v["iou_micro"] == pytest.approx(3 / 6)
    assert v["dice_macro"] == pytest.approx(6 / 9)  # one class: macro = micro
    assert v["dice_foreground"] == pytest.approx(6 / 9)
    assert v["dice_per_image"] == pytest.approx((1 / 2 + 4 / 5) / 2)  # mean Dice per object

    both = build_metrics(2, task="binary")
    both.update(probs, target)
    v = _values(both)
    assert v["dice_background"] == pytest.approx(2 / 5)  # tp 1 fp 2 fn 1
    assert v["iou_background"] == pytest.approx(1 / 4)
    assert v["dice_micro"] == pytest.approx(4 / 7)  # 4 of 7 counted pixels right
    assert v["dice_macro"] == pytest.approx((6 / 9 + 2 / 5) / 2)
    assert v["dice_per_image"] == pytest.approx(((1 / 2 + 1 / 2) / 2 + (4 / 5 + 0) / 2) / 2)

    logits = torch.logit(probs.clamp(1e-4, 1 - 1e-4))  # logits give the same labels
    from_logits = build_metrics(2, task="binary", include_background=False)
    from_logits.update(logits, target)
    assert _values(from_logits) == pytest.approx(_values(fg))


def test_select_valid_flattens_real_slots():
    preds = torch.arange(2 * 3 * 2 * 2).view(2, 3, 2, 2).float()
    target = torch.zeros(2, 3, 2, 2)
    valid = torch.tensor([[True, False, True], [False, False, True]])
    p, t = select_valid(preds, target, valid)
    assert p.shape == (3, 2, 2) and t.shape == (3, 2, 2)
    assert torch.equal(p[1], preds[0, 2]) and torch.equal(p[2], preds[1, 2])
    assert select_valid(preds, target, None)[0].shape == (6, 2, 2)


def test_clone_with_prefix_is_independent():
    base = build_metrics(3, task="multiclass", class_names=NAMES)
    val = base.clone(prefix="val_")
    val.update(PREDS, TARGET)
    v = _values(val)
    assert v["val_dice_micro"] == pytest.approx(0.7)
    assert "val_dice_gland" in v and "val_iou_tumour" in v and "val_dice_per_image" in v
    base.update(PREDS, torch.where(TARGET == 255, 255, PREDS))  # a perfect prediction
    assert float(base.compute()["dice_micro"]) == pytest.approx(1.0)
    assert _values(val)["val_dice_micro"] == pytest.approx(0.7)


def test_forward_gives_batch_values_and_accumulates():
    m = build_metrics(3, task="multiclass", class_names=NAMES)
    batch = m(PREDS[:1], TARGET[:1])
    assert float(batch["dice_micro"]) == pytest.approx(3 / 5)  # image 1: 3 of 5 pixels right
    assert float(batch["dice_per_image"]) == pytest.approx((2 / 3 + 2 / 3 + 1 / 2) / 3)
    m(PREDS[1:], TARGET[1:])
    assert _values(m)["dice_micro"] == pytest.approx(0.7)


def test_reset_and_unseen_class():
    m = build_metrics(4, task="multiclass")
    m.update(PREDS, TARGET)
    v = _values(m)
    assert v["dice_class_3"] == 0.0  # never in target nor prediction
    assert v["dice_macro"] == pytest.approx((4 / 6 + 6 / 8 + 4 / 6) / 3)  # left out of macro
    m.reset()
    m.update(PREDS, torch.where(TARGET == 255, 255, PREDS))
    assert _values(m)["dice_micro"] == pytest.approx(1.0)


def test_config_errors():
    with pytest.raises(MetricsConfigError, match="num_classes must be 2"):
        build_metrics(3, task="binary")
    with pytest.raises(MetricsConfigError, match="class_names"):
        build_metrics(3, task="multiclass", class_names=["a", "b"])
    with pytest.raises(MetricsConfigError, match="task"):
        build_metrics(3, task="semantic")  # type: ignore[arg-type]


def test_multiclass_accepts_scores_and_rejects_bad_labels():
    scores = torch.nn.functional.one_hot(PREDS, 3).permute(0, 3, 1, 2).float() * 5.0
    m = build_metrics(3, task="multiclass")
    m.update(scores, TARGET)
    assert _values(m)["dice_micro"] == pytest.approx(0.7)
    with pytest.raises(MetricsConfigError, match="outside"):
        m.update(PREDS, torch.full_like(TARGET, 7))
    with pytest.raises(MetricsConfigError, match="preds"):
        m.update(torch.full_like(PREDS, 3), TARGET)


def _ddp_worker(rank: int, world: int, port: int, queue) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    m = build_metrics(3, task="multiclass", class_names=NAMES, include_background=False)
    m.update(PREDS[rank : rank + 1], TARGET[rank : rank + 1])  # each rank sees one image
    queue.put((rank, _values(m)))
    dist.destroy_process_group()


@pytest.mark.slow  # spawns two processes (~20 s on a busy 2-core CPU)
def test_ddp_sync_equals_single_process():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    single = build_metrics(3, task="multiclass", class_names=NAMES, include_background=False)
    single.update(PREDS, TARGET)
    expected = _values(single)
    assert results[0] == pytest.approx(expected) and results[1] == pytest.approx(expected)
