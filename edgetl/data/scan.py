"""Finding the images of a data set: class-per-subfolder folders, CSV manifests, loose images.

:func:`scan_dataset` is for training (labelled, at least two classes); :func:`scan_images` takes
any folder of images for calibration or validation (class subfolders give labels, loose images are
unlabelled). Both walk folders the same way.

>>> scan_images.__name__
'scan_images'
"""

from __future__ import annotations

import csv
from pathlib import Path

from edgetl_runtime.preprocess import IMAGE_SUFFIXES, is_image_file

from .dataset import EXPECTED_LAYOUT, DatasetError, ImageDataset, Sample


def scan_dataset(path: str | Path) -> ImageDataset:
    """Return the data set in ``path``: a class-per-subfolder folder or a ``.csv`` manifest.

    Raises :class:`DatasetError` when the layout cannot train a classifier (no images, one class,
    an empty class folder, a CSV with a bad header or missing files).
    """
    path = Path(path).expanduser().absolute()
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder; {EXPECTED_LAYOUT}")
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise DatasetError(f"{path}: a data set is a folder or a .csv manifest, not a single file; {EXPECTED_LAYOUT}")
        return _scan_csv(path)
    return _scan_folder(path)


def _visible(name: str) -> bool:
    return not name.startswith((".", "__"))  # .DS_Store, .ipynb_checkpoints, __MACOSX


def _images_under(
    folder: Path, top_level_only: bool = False, problems: list[str] | None = None, seen: set[tuple[int, int]] | None = None
) -> list[Path]:
    """Return the visible image files in ``folder`` (recursively unless ``top_level_only``), sorted.

    Symlinked folders are followed, each real folder once (``seen``, shared between calls): a link
    back to a folder already walked (a loop) is not entered again. Links that lead nowhere (broken,
    or a loop of links), loops and folders nested deeper than 32 levels are appended to
    ``problems`` so the caller can say what was left out.
    """
    problems = [] if problems is None else problems
    found: list[Path] = []
    seen = set() if seen is None else seen

    def walk(current: Path, depth: int) -> None:
        try:
            stat = current.stat()
            entries = sorted(current.iterdir())
        except OSError as exc:
            problems.append(f"{current}: cannot be listed ({exc.strerror or exc})")
            return
        if (stat.st_dev, stat.st_ino) in seen:
            problems.append(f"{current}: links back to a folder already read (a symlink loop); not read twice")
            return
        seen.add((stat.st_dev, stat.st_ino))
        for entry in entries:
            if not _visible(entry.name):
                continue
            if entry.is_symlink() and not entry.exists():  # exists() follows the link: False when broken or looping
                if is_image_file(entry) or not entry.suffix:
                    problems.append(f"{entry}: a symlink that leads nowhere (broken, or a loop of links)")
            elif entry.is_dir():
                if top_level_only:
                    continue
                if depth >= 32:
                    problems.append(f"{entry}: nested deeper than 32 folders; not read")
                else:
                    walk(entry, depth + 1)
            elif entry.is_file() and is_image_file(entry):
                found.append(entry)
            elif is_image_file(entry):  # a pipe, socket or device named like an image: never opened, said
                problems.append(f"{entry}: not a regular file (a pipe, socket or device); left out")

    walk(folder, 0)
    return sorted(found)


def _warn_left_out(problems: list[str]) -> None:
    if problems:
        from edgetl.console import err_console

        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        err_console().print(f"[yellow]warning:[/] {len(problems)} path(s) of the data set were left out:")
        err_console().print("\n".join(f"  {p}" for p in problems[:20]) + more, markup=False, highlight=False, soft_wrap=True)


def _scan_folder(root: Path) -> ImageDataset:
    class_dirs = sorted((d for d in root.iterdir() if d.is_dir() and _visible(d.name)), key=lambda d: d.name)
    loose = [p for p in root.iterdir() if p.is_file() and is_image_file(p)]
    if not class_dirs:
        what = f"{len(loose)} images directly in it but no class folders" if loose else "no class folders"
        raise DatasetError(f"{root}: found {what}; {EXPECTED_LAYOUT}")
    samples: list[Sample] = []
    empty: list[str] = []
    seen: set[tuple[int, int]] = set()
    problems = [f"{p}: a symlink that leads nowhere (broken, or a loop of links)" for p in sorted(root.iterdir())
                if p.is_symlink() and not p.exists() and _visible(p.name)]
    for d in class_dirs:
        files = _images_under(d, problems=problems, seen=seen)
        if not files:
            empty.append(d.name)
        samples.extend(Sample(p, d.name) for p in files)
    if not samples:
        raise DatasetError(f"{root}: no image files ({' '.join(IMAGE_SUFFIXES)}) in its subfolders; {EXPECTED_LAYOUT}")
    names = {d.name for d in class_dirs}
    if names & {"train", "test", "val", "validation"} and all(
        any(sub.is_dir() for sub in d.iterdir()) for d in class_dirs if d.name not in empty
    ):
        raise DatasetError(
            f"{root} looks like a folder of splits ({', '.join(sorted(names))}), each holding class folders; "
            f"point at one split instead, e.g. {root / ('train' if 'train' in names else sorted(names)[0])}"
        )
    _warn_left_out(problems)
    if empty:
        raise DatasetError(
            f"{root}: class folder(s) {', '.join(repr(e) for e in empty)} contain no images; "
            "add images to them or remove the folder(s)"
        )
    return _checked(samples, root, where=str(root))


def _scan_csv(csv_path: Path, min_classes: int = 2) -> ImageDataset:
    base = csv_path.parent
    samples: list[Sample] = []
    missing: list[str] = []
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = [h.strip().lower() for h in next(reader, [])]
            if "path" not in header or "label" not in header:
                raise DatasetError(
                    f"{csv_path}, line 1: header must name the columns 'path' and 'label' "
                    f"(extra columns are allowed), got {','.join(header) or 'an empty file'}"
                )
            ip, il = header.index("path"), header.index("label")
            for row in reader:
                line = reader.line_num
                if not row or all(not c.strip() for c in row):
                    continue
                if len(row) <= max(ip, il) or not row[ip].strip() or not row[il].strip():
                    raise DatasetError(f"{csv_path}, line {line}: expected a path and a label, got {','.join(row)!r}")
                file = Path(row[ip].strip()).expanduser()
                file = file if file.is_absolute() else base / file
                if not file.is_file():
                    missing.append(f"line {line}: {file}")
                samples.append(Sample(file, row[il].strip()))
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{csv_path}: not a UTF-8 text CSV file ({exc}); save it as UTF-8 CSV") from None
    except csv.Error as exc:  # a field over csv's 128 KiB limit, a NUL byte in older Pythons, ...
        raise DatasetError(f"{csv_path}, line {reader.line_num}: not a readable CSV row ({exc})") from None
    except OSError as exc:
        raise DatasetError(f"{csv_path}: cannot be read ({exc.strerror or exc})") from None
    if missing:
        shown = "\n  ".join(missing[:10]) + (f"\n  ... and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise DatasetError(f"{csv_path}: {len(missing)} listed file(s) do not exist:\n  {shown}\nfix the paths (relative ones are relative to {base})")
    if not samples:
        raise DatasetError(f"{csv_path}: lists no images; {EXPECTED_LAYOUT}")
    if min_classes < 2:
        return ImageDataset(tuple(samples), tuple(sorted({s.label for s in samples})), base)
    return _checked(samples, base, where=str(csv_path))


def _checked(samples: list[Sample], root: Path, where: str) -> ImageDataset:
    classes = tuple(sorted({s.label for s in samples}))
    if len(classes) < 2:
        other = "good" if classes[0] == "defect" else "defect"
        raise DatasetError(
            f"found only class {classes[0]!r} in {where}; a classifier needs at least two classes: "
            f"add a folder of {other} images"
        )
    return ImageDataset(tuple(samples), classes, root)




def scan_images(path: str | Path) -> ImageDataset:
    """Return every image under ``path``: labelled by class subfolder, unlabelled when loose.

    For calibration and validation images, which may be one plain folder. A ``.csv`` manifest is
    read as by :func:`scan_dataset`. Raises :class:`DatasetError` when there is no image.
    """
    path = Path(path).expanduser().absolute()
    if path.is_file() and path.suffix.lower() == ".csv":
        return _scan_csv(path, min_classes=1)
    if not path.is_dir():
        raise DatasetError(f"{path}: no such folder of images; pass a folder holding images (or <label>/ subfolders)")
    problems: list[str] = []
    seen: set[tuple[int, int]] = set()
    samples = [Sample(p, None) for p in _images_under(path, top_level_only=True, problems=problems, seen=seen)]
    for d in sorted((d for d in path.iterdir() if d.is_dir() and _visible(d.name)), key=lambda d: d.name):
        samples.extend(Sample(p, d.name) for p in _images_under(d, problems=problems, seen=seen))
    _warn_left_out(problems)
    if not samples:
        raise DatasetError(f"{path}: no image files ({' '.join(IMAGE_SUFFIXES)}) in it or its subfolders")
    classes = tuple(sorted({s.label for s in samples if s.label is not None}))
    return ImageDataset(tuple(samples), classes, path)
