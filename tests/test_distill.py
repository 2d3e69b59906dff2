"""Knowledge distillation: the loss, and a student that really follows its teacher."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_config

from seglab.config import config_from_dict
from seglab.errors import SeglabError
from seglab.inference.predictor import Predictor, resolve_checkpoint
from seglab.training.losses import distillation_loss
from seglab.training.train import train


def test_distillation_loss_properties():
    torch.manual_seed(0)
    s, t = torch.randn(2, 4, 8, 8, requires_grad=True), torch.randn(2, 4, 8, 8)
    target = torch.randint(0, 4, (2, 8, 8))
    assert distillation_loss(t, t, target, 255, 2.0).abs() < 1e-6  # KL(p || p) = 0
    loss = distillation_loss(s, t, target, 255, 2.0)
    assert loss > 0
    loss.backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    # ignored pixels are not distilled: changing the student there changes nothing
    target[:, :4] = 255
    s2 = s.detach().clone()
    s2[:, :, :4] += 10
    torch.testing.assert_close(
        distillation_loss(s2, t, target, 255, 2.0),
        distillation_loss(s.detach(), t, target, 255, 2.0),
    )


def test_distillation_loss_weights_pixels_by_their_class():
    torch.manual_seed(0)
    s, t = torch.randn(2, 3, 6, 6), torch.randn(2, 3, 6, 6)
    target = torch.randint(0, 3, (2, 6, 6))
    target[0, 0] = 255
    plain = distillation_loss(s, t, target, 255, 2.0)
    # equal weights are the plain mean; a weight of zero leaves that class's pixels out
    torch.testing.assert_close(
        distillation_loss(s, t, target, 255, 2.0, torch.full((3,), 4.0)), plain
    )
    only_0 = distillation_loss(s, t, target, 255, 2.0, torch.tensor([1.0, 0.0, 0.0]))
    keep = (target == 0).unsqueeze(1).expand_as(s)
    s0 = torch.where(keep, s, t)  # student equals teacher on every other pixel: KL 0 there
    torch.testing.assert_close(
        only_0,
        distillation_loss(s0, t, target, 255, 2.0) * ((target != 255).sum() / (target == 0).sum()),
    )
    # the weighted mean: sum(w[y] * kl) / sum(w[y])
    w = torch.tensor([1.0, 5.0, 0.5])
    log_s, log_t = (s / 2).log_softmax(1), (t / 2).log_softmax(1)
    kl = (log_t.exp() * (log_t - log_s)).sum(1)
    valid = target != 255
    expected = (kl[valid] * w[target[valid]]).sum() / w[target[valid]].sum() * 4
    torch.testing.assert_close(distillation_loss(s, t, target, 255, 2.0, w), expected)


def test_training_weights_the_distillation_term_with_the_class_weights(
    tmp_path, synth_root, trained_run, monkeypatch
):
    """The task hands the loss's class weights to the distillation term unless
    ``distill.class_weighted`` is false."""
    import seglab.training.task as task_mod

    seen = []

    def spy(*args, **kwargs):
        seen.append(args[5] if len(args) > 5 else kwargs.get("weights"))
        return distillation_loss(*args, **kwargs)

    monkeypatch.setattr(task_mod, "distillation_loss", spy)
    for weighted in (True, False):
        cfg = tiny_config(
            synth_root,
            name=f"kd-{weighted}",
            train={"epochs": 1},
            loss={"name": "ce", "class_weights": [1.0, 2.0, 3.0, 4.0]},
            distill={"teacher": str(trained_run), "class_weighted": weighted},
        )
        train(config_from_dict(cfg), tmp_path / "runs")
    n = len(seen) // 2
    assert n > 0 and all(w is not None for w in seen[:n]) and all(w is None for w in seen[n:])
    torch.testing.assert_close(seen[0].cpu(), torch.tensor([1.0, 2.0, 3.0, 4.0]))


@pytest.fixture(scope="module")
def biased_teacher(trained_run, tmp_path_factory):
    """The trained tiny model with its head biased so that it says "rectangle" everywhere."""
    ckpt = torch.load(resolve_checkpoint(trained_run), map_location="cpu", weights_only=True)
    (bias,) = [k for k in ckpt["state_dict"] if "segmentation_head" in k and k.endswith("bias")]
    ckpt["state_dict"][bias][2] += 50.0
    path = tmp_path_factory.mktemp("teacher") / "teacher.ckpt"
    torch.save(ckpt, path)
    return path


def student_share_of_class_2(run, synth_root) -> float:
    p = Predictor.open(run, backend="torch")
    files = sorted((synth_root / "images").glob("test_*.png"))
    return float(sum((p.predict_file(f)[1] == 2).mean() for f in files) / len(files))


def test_student_follows_the_teacher_not_only_the_labels(tmp_path, synth_root, biased_teacher):
    teacher_says = student_share_of_class_2(biased_teacher, synth_root)
    assert teacher_says > 0.99
    runs = {}
    for weight in (0.0, 1.0):
        cfg = tiny_config(
            synth_root,
            name=f"student-{weight}",
            train={"epochs": 3},
            distill={"teacher": str(biased_teacher), "weight": weight, "temperature": 1.0},
        )
        runs[weight] = train(config_from_dict(cfg), tmp_path / "runs")
    labels_only = student_share_of_class_2(runs[0.0], synth_root)
    distilled = student_share_of_class_2(runs[1.0], synth_root)
    assert labels_only < 0.5 < distilled
    ckpt = torch.load(resolve_checkpoint(runs[1.0]), map_location="cpu", weights_only=True)
    assert not any("teacher" in k for k in ckpt["state_dict"])  # the teacher is not saved


def test_teacher_with_other_classes_is_refused(tmp_path, synth_root, trained_run):
    cfg = tiny_config(synth_root, distill={"teacher": str(trained_run)})
    cfg["data"]["classes"] = ["a", "b", "c", "d"]
    with pytest.raises(SeglabError, match="distill.teacher"):
        train(config_from_dict(cfg), tmp_path / "runs")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_teacher_with_other_input_channels_is_refused(tmp_path, synth_root, trained_run):
    cfg = tiny_config(synth_root, distill={"teacher": str(trained_run)})
    cfg["data"]["in_channels"] = 1  # a grey student, an RGB teacher
    with pytest.raises(SeglabError, match=r"takes input channels 3, this data set has 1"):
        train(config_from_dict(cfg), tmp_path / "runs")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_teacher_sees_the_image_at_its_own_scale(synth_root, trained_run):
    """Training batches come at the student's inference.scale (here 0.5 of the image); the
    teacher (trained at scale 1) must see the image at its own scale, 2x the batch, not
    0.5 x 1 of it."""
    from seglab.config import config_to_dict
    from seglab.data.dataset import DatasetDefinition
    from seglab.training.task import SegmentationTask

    cfg = config_from_dict(
        tiny_config(synth_root, distill={"teacher": str(trained_run)}, inference={"scale": 0.5})
    )
    meta = DatasetDefinition.from_config(cfg.data).to_meta()
    task = SegmentationTask(config_to_dict(cfg), meta)
    teacher = task.teacher[0]
    seen = []
    net = teacher.backend
    teacher.backend = lambda x: seen.append(tuple(x.shape[-2:])) or net(x)
    task.training_step(
        {
            "image": torch.zeros(2, 3, 32, 32, dtype=torch.uint8),
            "mask": torch.zeros(2, 32, 32, dtype=torch.long),
        },
        0,
    )
    assert seen == [(64, 64)]
