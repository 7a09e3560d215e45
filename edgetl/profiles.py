"""Device profiles on the workstation side: a re-export of ``edgetl_runtime.profiles``.

The runtime owns the schema and the loader so that a device, which has no TensorFlow and no
``edgetl``, reads the very same ``devices/*.toml``.

>>> from edgetl.profiles import load_profile
>>> load_profile("coral-usb").export.format
'edgetpu'
"""

from __future__ import annotations

from edgetl_runtime.profiles import (
    Budget,
    DetectionResult,
    DeviceProfile,
    ExportTarget,
    HostInfo,
    ProfileError,
    PublishedFigure,
    ReferenceModel,
    RuntimeSettings,
    detect,
    list_profiles,
    load_profile,
)

__all__ = [
    "Budget",
    "DetectionResult",
    "DeviceProfile",
    "ExportTarget",
    "HostInfo",
    "ProfileError",
    "PublishedFigure",
    "ReferenceModel",
    "RuntimeSettings",
    "detect",
    "list_profiles",
    "load_profile",
]
