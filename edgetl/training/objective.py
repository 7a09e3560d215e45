"""What training minimises: cross-entropy with optional label smoothing and knowledge distillation.

Targets are packed per image as ``[one-hot label (K) | teacher probabilities (K) | is-training (1)]``,
so one Keras loss serves both splits: training images get the smoothed / distilled loss, validation
images plain cross-entropy against the true label (model selection and early stopping compare the
same quantity whatever the recipe).

Distillation (Hinton et al. 2015) is *offline*: the teacher (a finished edgetl run, usually a larger
backbone at a higher resolution) scores every training image once, averaged over the four
flips/half-turn of the image, and the student learns ``(1 - w) * CE(label) + w * T² * CE(teacher_T,
student_T)`` where ``_T`` is a softmax at temperature ``T``. The augmentations edgetl uses preserve
the label, so a soft label computed on the plain image stands for its augmented copies.

>>> pack_targets(np.array([1, 0]), 2).tolist()
[[0.0, 1.0, 0.0, 1.0, 1.0], [1.0, 0.0, 1.0, 0.0, 1.0]]
"""

from __future__ import annotations

from pathlib import Path
import numpy as np

from .._tf import keras, tensorflow

EPSILON = 1e-7  # Keras' own clip for cross-entropy on probabilities


def pack_targets(y: np.ndarray, n_classes: int, teacher: np.ndarray | None = None, train: bool = True) -> np.ndarray:
    """Return the packed float32 targets for labels ``y`` (teacher probabilities default to the labels)."""
    onehot = np.eye(n_classes, dtype=np.float32)[np.asarray(y, np.int64)]
    soft = onehot if teacher is None else np.asarray(teacher, np.float32)
    flag = np.full((len(onehot), 1), 1.0 if train else 0.0, np.float32)
    return np.concatenate([onehot, soft, flag], axis=1)


def make_loss(n_classes: int, label_smoothing: float = 0.0, distill_weight: float = 0.0, temperature: float = 1.0):
    """Return a Keras loss ``f(packed targets, probabilities) -> per-image loss``."""
    tf = tensorflow()
    k, ls, w, t = n_classes, float(label_smoothing), float(distill_weight), float(temperature)

    def edgetl_loss(y_true, y_pred):
        y_true = tf.cast(y_true, tf.float32)
        onehot, teacher, is_train = y_true[:, :k], y_true[:, k : 2 * k], y_true[:, 2 * k]
        log_p = tf.math.log(tf.clip_by_value(tf.cast(y_pred, tf.float32), EPSILON, 1.0))
        plain = -tf.reduce_sum(onehot * log_p, axis=-1)
        smoothed = onehot * (1.0 - ls) + ls / k
        hard = -tf.reduce_sum(smoothed * log_p, axis=-1)
        if w > 0:
            student_t = tf.nn.log_softmax(log_p / t, axis=-1)
            teacher_t = tf.nn.softmax(tf.math.log(tf.clip_by_value(teacher, EPSILON, 1.0)) / t, axis=-1)
            soft = -tf.reduce_sum(teacher_t * student_t, axis=-1) * (t * t)
            hard = (1.0 - w) * hard + w * soft
        return tf.where(is_train > 0.5, hard, plain)

    return edgetl_loss


def make_accuracy(n_classes: int):
    """Return the Keras metric ``accuracy``: the top class against the packed targets' label."""
    tf = tensorflow()

    def accuracy(y_true, y_pred):
        truth = tf.argmax(tf.cast(y_true[:, :n_classes], tf.float32), axis=-1)
        return tf.cast(tf.equal(truth, tf.argmax(y_pred, axis=-1)), tf.float32)

    return accuracy


def make_auc(n_classes: int, defect_indices: list[int]):
    """Return the Keras metric ``auc``: ROC AUC of the defect score (the defect classes' summed probability).

    It is the quantity a user thresholds on the line, so ``select="auc"`` keeps the epoch that ranks
    good against defective images best, whatever its calibration.
    """
    tf, k = tensorflow(), keras()
    idx = tf.constant(list(defect_indices), tf.int32)

    class DefectAUC(k.metrics.AUC):
        def update_state(self, y_true, y_pred, sample_weight=None):
            onehot = tf.cast(y_true[:, :n_classes], tf.float32)
            truth = tf.reduce_sum(tf.gather(onehot, idx, axis=1), axis=1)
            score = tf.reduce_sum(tf.gather(tf.cast(y_pred, tf.float32), idx, axis=1), axis=1)
            return super().update_state(truth, score)  # every image counts once, whatever its class weight

    return DefectAUC(num_thresholds=1000, name="auc")


def teacher_probabilities(teacher_path: str | Path, samples: list[Path], labels: tuple[str, ...],
                          batch_size: int = 32, progress: bool = True) -> np.ndarray:
    """Return the teacher run's class probabilities for each image file, averaged over 4 flips.

    Raises :class:`~edgetl.run.RunError` when the teacher is not a finished run, or when its classes
    differ from the student's (names and order must match).
    """
    from ..data import ImageDataset, Sample, load_images
    from ..run import RunError, load_run

    teacher = load_run(teacher_path)
    if tuple(teacher.spec.labels) != tuple(labels):
        raise RunError(f"{teacher_path}: the teacher's classes {list(teacher.spec.labels)} differ from this data "
                       f"set's {list(labels)}; train the teacher on the same classes")
    if teacher.spec.task != "classification":
        raise RunError(f"{teacher_path}: a teacher must be a classifier run, this one is {teacher.spec.task!r}")
    model = teacher.load_model()
    data = ImageDataset(samples=tuple(Sample(Path(p), labels[0]) for p in samples), classes=labels, root=Path("."))
    images = load_images(data, teacher.spec.input, progress=progress)
    if len(images.x) != len(samples):
        raise RunError(f"{teacher_path}: {len(samples) - len(images.x)} training images could not be read for "
                       "the teacher")
    x = images.x
    views = [x, x[:, :, ::-1], x[:, ::-1], x[:, ::-1, ::-1]]  # identity, left-right, up-down, half-turn
    total = np.zeros((len(x), len(labels)), np.float64)
    for view in views:
        for i in range(0, len(view), batch_size):
            batch = np.ascontiguousarray(view[i : i + batch_size]).astype(np.float32)
            total[i : i + len(batch)] += np.asarray(model.predict_on_batch(batch), np.float64)
    return (total / len(views)).astype(np.float32)
