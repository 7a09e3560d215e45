"""The training objective: packed targets, label smoothing and the distillation term, on numbers."""

from __future__ import annotations

import numpy as np
import pytest

from edgetl.training.objective import make_accuracy, make_loss, pack_targets


def _ce(target: np.ndarray, probs: np.ndarray) -> np.ndarray:
    return -(target * np.log(probs)).sum(-1)


PROBS = np.array([[0.7, 0.3], [0.2, 0.8], [0.55, 0.45]], np.float32)
LABELS = np.array([0, 1, 1])


def test_without_smoothing_or_teacher_the_loss_is_cross_entropy_on_both_splits():
    loss = make_loss(2)
    expected = _ce(np.eye(2)[LABELS], PROBS)
    for train in (True, False):
        got = loss(pack_targets(LABELS, 2, train=train), PROBS).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_label_smoothing_applies_to_training_images_only():
    loss = make_loss(2, label_smoothing=0.2)
    smoothed = np.eye(2)[LABELS] * 0.8 + 0.1
    np.testing.assert_allclose(loss(pack_targets(LABELS, 2), PROBS).numpy(), _ce(smoothed, PROBS), rtol=1e-5)
    np.testing.assert_allclose(loss(pack_targets(LABELS, 2, train=False), PROBS).numpy(),
                               _ce(np.eye(2)[LABELS], PROBS), rtol=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_distillation_mixes_label_and_tempered_teacher_cross_entropy(temperature):
    teacher = np.array([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7]], np.float32)
    w = 0.75
    loss = make_loss(2, distill_weight=w, temperature=temperature)
    got = loss(pack_targets(LABELS, 2, teacher), PROBS).numpy()

    def tempered(p):
        z = np.log(p) / temperature
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    soft = _ce(tempered(teacher), tempered(PROBS)) * temperature**2
    np.testing.assert_allclose(got, (1 - w) * _ce(np.eye(2)[LABELS], PROBS) + w * soft, rtol=1e-4)
    # Validation images ignore the teacher: the selection criterion stays plain cross-entropy.
    plain = loss(pack_targets(LABELS, 2, teacher, train=False), PROBS).numpy()
    np.testing.assert_allclose(plain, _ce(np.eye(2)[LABELS], PROBS), rtol=1e-5)


def test_the_loss_is_smallest_where_the_student_matches_the_teacher():
    teacher = np.array([[0.8, 0.2]], np.float32)
    loss = make_loss(2, distill_weight=1.0, temperature=2.0)
    grid = np.linspace(0.05, 0.95, 19, dtype=np.float32)
    values = [float(loss(pack_targets(np.array([0]), 2, teacher), np.array([[p, 1 - p]], np.float32)).numpy()[0])
              for p in grid]
    assert grid[int(np.argmin(values))] == pytest.approx(0.8, abs=0.03)


def test_accuracy_reads_the_label_part_of_the_packed_targets():
    teacher = np.array([[0.1, 0.9], [0.9, 0.1], [0.9, 0.1]], np.float32)  # disagrees with every label
    got = make_accuracy(2)(pack_targets(LABELS, 2, teacher), PROBS).numpy()
    np.testing.assert_array_equal(got, [1.0, 1.0, 0.0])
