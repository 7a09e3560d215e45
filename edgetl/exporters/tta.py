"""Test-time augmentation inside the exported graph: the model's scores averaged over flipped views.

Inspection images have no canonical orientation, so a defect seen mirrored is the same defect.
:func:`with_tta` returns a Keras model that stacks the image with its left-right, up-down and
half-turn flips into one batch of four, runs the classifier once on that batch and averages the
four score vectors. Input and output keep their shapes, so the contract, the runtime and every
export format stay as they are; the cost is four inferences per image (see ``edgetl benchmark
--tta`` for the latency on a device).

>>> VIEWS
('identity', 'flip left-right', 'flip up-down', 'half turn')
"""

from __future__ import annotations

from typing import Any

VIEWS = ("identity", "flip left-right", "flip up-down", "half turn")


def with_tta(model: Any) -> Any:
    """Return ``model`` wrapped so that it outputs the mean of its scores over :data:`VIEWS`."""
    from edgetl._tf import keras, tensorflow

    k, tf = keras(), tensorflow()
    shape = tuple(model.inputs[0].shape[1:])
    image = k.Input(shape, name="image")
    views = [image, tf.reverse(image, [2]), tf.reverse(image, [1]), tf.reverse(image, [1, 2])]
    batch = tf.concat(views, axis=0)  # (4N, H, W, C): one call of the classifier, its weights once
    scores = model(batch, training=False)
    classes = scores.shape[-1]
    per_view = tf.reshape(scores, [len(views), -1, classes])
    mean = tf.reduce_mean(per_view, axis=0)
    return k.Model(image, mean, name=f"{model.name}_tta")
