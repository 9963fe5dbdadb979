"""The check: accuracy of `value >= threshold` on a fixed labelled data set."""

import json

DATA = [(0.1, 0), (0.2, 0), (0.35, 0), (0.4, 0), (0.48, 1), (0.55, 1), (0.6, 1), (0.9, 1)]
with open("params.json") as f:
    threshold = json.load(f)["threshold"]
right = sum((value >= threshold) == bool(label) for value, label in DATA)
print(f"accuracy: {right / len(DATA):.3f}")
