"""Training-step time of EfficientNet-Lite0 under each Keras precision policy, side by side.

Whole-network fine-tuning (BatchNorm frozen, as edgetl's phase 2), batch 32, random pixels;
the policies are interleaved (``--rounds`` times) so that a drift of the machine hits all of them.
It answers whether ``--mixed-precision bfloat16`` pays on this CPU:

    python benchmarks/train_step.py --size 224 --steps 6 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from _common import add_state_options, start

CHILD = r"""
import os, sys, time, json
os.environ["TF_USE_LEGACY_KERAS"] = "1"
import numpy as np
from edgetl._tf import keras
from edgetl.backbones import load_backbone
policy, size, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
k = keras()
k.mixed_precision.set_global_policy(policy)
backbone = load_backbone("efficientnet_lite0", weights="imagenet", input_size=(size, size), alpha=1.0)
pooled = k.layers.GlobalAveragePooling2D()(backbone.output)
model = k.Model(backbone.input, k.layers.Dense(2, activation="softmax", dtype="float32")(pooled))
for layer in backbone.layers:
    layer.trainable = not isinstance(layer, k.layers.BatchNormalization)
model.compile(k.optimizers.Adam(1e-4), "sparse_categorical_crossentropy")
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (32 * steps, size, size, 3)).astype(np.float32)
y = rng.integers(0, 2, 32 * steps)
model.fit(x[:64], y[:64], batch_size=32, verbose=0)  # trace and warm up
t = time.perf_counter()
model.fit(x, y, batch_size=32, verbose=0)
print(json.dumps({"policy": policy, "seconds_per_step": (time.perf_counter() - t) / steps}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=6, help="timed steps of 32 images per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of every policy")
    parser.add_argument("--policies", default="float32,mixed_bfloat16")
    add_state_options(parser)
    args = parser.parse_args()
    bench = start(args)
    times: dict[str, list[float]] = {p: [] for p in args.policies.split(",")}
    for _ in range(args.rounds):
        for policy in times:  # a fresh process each: a policy is global to Keras
            out = subprocess.run([sys.executable, "-c", CHILD, policy, str(args.size), str(args.steps)],
                                 capture_output=True, text=True, check=True)
            times[policy].append(json.loads(out.stdout.strip().splitlines()[-1])["seconds_per_step"])
    base = statistics.median(times["float32"]) if "float32" in times else None
    lines = [f"EfficientNet-Lite0 training step, {args.size} px, batch 32, whole network", "",
             "| policy | s/step (median) | runs | × float32 |", "|---|---:|---|---:|"]
    for policy, values in times.items():
        med = statistics.median(values)
        ratio = f"{med / base:.2f}" if base else "n/a"
        lines.append(f"| {policy} | {med:.2f} | {', '.join(f'{v:.2f}' for v in values)} | {ratio} |")
    table = "\n".join(lines) + "\n"
    print(table)
    bench.end()
    return bench.finish(table)


if __name__ == "__main__":
    sys.exit(main())
