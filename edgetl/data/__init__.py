"""Data: find, split, sample and decode image data sets (folders, CSV manifests, ELPV).

Stage 1 of edgetl (data -> training -> evaluation -> export -> runtime -> devices). No TensorFlow.

>>> from pathlib import Path
>>> ds = ImageDataset((Sample(Path("a.png"), "good"), Sample(Path("b.png"), "defect")), ("defect", "good"), None)
>>> ds.counts(), ds.labels_array().tolist()
({'defect': 1, 'good': 1}, [1, 0])
"""

from __future__ import annotations

from .dataset import EXPECTED_LAYOUT, DatasetError, ImageDataset, Sample, stratified_sample
from .inspection import inspect_dataset
from .loading import LoadedImages, load_images
from .scan import scan_dataset, scan_images

__all__ = ["EXPECTED_LAYOUT", "DatasetError", "Sample", "ImageDataset", "LoadedImages", "scan_dataset",
           "scan_images", "load_images", "stratified_sample", "inspect_dataset"]
