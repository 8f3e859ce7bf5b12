"""Data YAML resolution: turn a data set description into absolute paths, class names and a count.

A data YAML has the keys ``path`` (root folder; relative values are resolved against the YAML's own
folder), ``train``, ``val``, ``test`` (each a folder of images, a ``.txt`` list of image paths, or a list
of those), ``names`` (a dict ``{id: name}`` or a list) and optionally ``nc``, ``download`` (an http(s) URL of
an archive, fetched and unpacked with the checks of :mod:`yoloseg.utils.archive` when a split is missing) and
``download_sha256`` (that archive's SHA-256, checked before unpacking).

Labels live beside the images: the last ``/images/`` path component is swapped for ``/labels/`` and the
image extension for ``.txt`` (:func:`img2label_paths`).
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

__all__ = [
    "IMG_FORMATS",
    "check_data_yaml",
    "data_dir",
    "img2label_paths",
    "list_image_files",
]

IMG_FORMATS = {"bmp", "dng", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp", "pfm"}
SPLITS = ("train", "val", "test")
PACKAGED_DIR = Path(__file__).resolve().parent.parent / "cfg" / "datasets"


def data_dir() -> Path:
    """Folder for generated and downloaded data sets.

    ``$YOLOSEG_DATA_DIR`` when set, else ``$XDG_CACHE_HOME/yoloseg`` (default ``~/.cache/yoloseg``).
    Nothing is created here until a data set is actually generated or downloaded.
    """
    env = os.environ.get("YOLOSEG_DATA_DIR")
    if env:
        return Path(env).expanduser().resolve()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser().resolve() / "yoloseg"


def img2label_paths(img_paths):
    """Label file for each image: last ``/images/`` -> ``/labels/``, extension -> ``.txt``."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    out = []
    for p in img_paths:
        p = str(p)
        head, sep, tail = p.rpartition(sa)
        base = (head + sb + tail) if sep else p
        out.append(os.path.splitext(base)[0] + ".txt")
    return out


def _is_image(name: str) -> bool:
    return name.rpartition(".")[2].lower() in IMG_FORMATS


def list_image_files(spec, root: Path | None = None, what: str = "images") -> list[str]:
    """Absolute image paths from a folder, a ``.txt`` list, a single image, or a list of those.

    Relative entries resolve against ``root``; relative lines of a ``.txt`` list resolve against the
    list file's folder. Raises FileNotFoundError naming ``what`` for a missing entry.
    """
    specs = spec if isinstance(spec, (list, tuple)) else [spec]
    files: list[str] = []
    for s in specs:
        p = Path(str(s)).expanduser()
        if not p.is_absolute() and root is not None:
            p = root / p
        if p.is_dir():
            for dirpath, _, names in os.walk(p):
                files.extend(os.path.join(dirpath, n) for n in names if _is_image(n))
        elif p.is_file() and p.suffix.lower() == ".txt":
            parent = p.parent
            for line in p.read_text().splitlines():
                line = line.strip()
                if not line:
                    continue
                q = Path(line).expanduser()
                if not q.is_absolute():
                    q = parent / q
                files.append(os.path.normpath(str(q)))
        elif p.is_file() and _is_image(p.name):
            files.append(str(p))
        else:
            raise FileNotFoundError(f"{what}: {p} does not exist (expected a folder, a .txt list or an image)")
    files = sorted({os.path.abspath(f) for f in files})
    return files


def _resolve_yaml(path_or_name) -> Path:
    p = Path(str(path_or_name)).expanduser()
    if p.is_file():
        return p.resolve()
    name = p.name if p.suffix in (".yaml", ".yml") else p.name + ".yaml"
    packaged = PACKAGED_DIR / name
    if len(p.parts) == 1 and packaged.is_file():
        return packaged
    raise FileNotFoundError(f"data: {path_or_name!s} not found (no such file, and no packaged data set of that name)")


def _normalize_names(names, nc, yaml_file) -> dict[int, str]:
    if names is None:
        if nc is None:
            raise ValueError(f"data YAML {yaml_file}: needs 'names' (or at least 'nc')")
        return {i: f"class{i}" for i in range(int(nc))}
    if isinstance(names, (list, tuple)):
        out = {i: str(n) for i, n in enumerate(names)}
    elif isinstance(names, dict):
        try:
            out = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            raise ValueError(f"data YAML {yaml_file}: 'names' keys must be integers") from None
        if sorted(out) != list(range(len(out))):
            raise ValueError(f"data YAML {yaml_file}: 'names' keys must be 0..{len(out) - 1}, got {sorted(out)}")
    else:
        raise ValueError(f"data YAML {yaml_file}: 'names' must be a dict or a list, got {type(names).__name__}")
    if nc is not None and int(nc) != len(out):
        raise ValueError(f"data YAML {yaml_file}: nc={nc} but {len(out)} names given")
    return dict(sorted(out.items()))


def _offline() -> bool:
    return os.environ.get("YOLOSEG_OFFLINE", "").lower() in ("1", "true", "yes")


def _download(url: str, dest: Path, yaml_file: Path, sha256=None) -> None:
    """Fetch ``url`` (an archive) and unpack it into ``dest`` with the checks of :mod:`yoloseg.utils.archive`;
    any failure raises a clear error naming the data YAML and the URL."""
    from yoloseg.data.download import ChecksumError, DownloadError, check_sha256, download_file
    from yoloseg.utils.archive import UnsafeArchiveError, extract_archive, unpack_limits

    hint = f"download it yourself and unpack it into {dest}, or fix 'path' in {yaml_file}"
    if _offline():
        raise FileNotFoundError(
            f"data YAML {yaml_file}: the data set is missing and YOLOSEG_OFFLINE is set, "
            f"so it was not downloaded from {url}; {hint}"
        )
    if not url.startswith(("http://", "https://")):
        raise FileNotFoundError(
            f"data YAML {yaml_file}: 'download' must be an http(s) URL of an archive, got {url!r}; {hint}"
        )
    sha256 = check_sha256(sha256, f"data YAML {yaml_file}: 'download_sha256'")
    unpack_limits()  # a malformed cap setting is reported before anything is fetched
    name = url.split("?")[0].rstrip("/").rpartition("/")[2] or "download"
    archive = dest / f".{name}.download"
    try:
        download_file(url, archive, sha256=sha256, desc=name)
    except DownloadError as e:  # the data set is still missing
        raise FileNotFoundError(f"data YAML {yaml_file}: {e}; {hint}") from e
    except ChecksumError as e:
        raise ChecksumError(f"data YAML {yaml_file}: 'download_sha256' does not match: {e}") from None
    except Exception as e:  # anything unforeseen still names the YAML and the URL
        raise FileNotFoundError(f"data YAML {yaml_file}: downloading {url} failed ({type(e).__name__}: {e}); "
                                f"{hint}") from e
    try:
        extract_archive(archive, dest)
    except UnsafeArchiveError as e:
        where = f"member {e.member!r}: " if e.member is not None else ""
        raise UnsafeArchiveError(e.archive, e.member, e.reason, message=(
            f"data YAML {yaml_file}: the archive downloaded from {url} was refused and nothing was unpacked: "
            f"{where}{e.reason}")) from None
    except OSError as e:  # a clash with what is already there, a full disk
        raise FileNotFoundError(f"data YAML {yaml_file}: unpacking the archive downloaded from {url} failed ({e}); "
                                f"{hint}") from e
    finally:
        archive.unlink(missing_ok=True)


def check_data_yaml(path_or_name) -> dict:
    """Load and validate a data YAML; returns a dict with absolute paths, ``names`` (dict) and ``nc``.

    ``path_or_name`` is a YAML path, a dict already loaded, a packaged name, or ``"synthetic-shapes"``
    (the built-in data set, generated on first use). Each present split is returned as an absolute path
    or a list of them; ``yaml_file`` records where the description came from.
    """
    if isinstance(path_or_name, dict):
        cfg, yaml_file = dict(path_or_name), Path(path_or_name.get("yaml_file", "<dict>"))
        base = Path(cfg.get("yaml_file", ".")).parent if "yaml_file" in cfg else Path.cwd()
    else:
        stem = Path(str(path_or_name)).name
        if stem in ("synthetic-shapes", "synthetic-shapes.yaml") and not Path(str(path_or_name)).is_file():
            from yoloseg.data.synthetic import ensure_synthetic_shapes, synthetic_spec

            yaml_file = ensure_synthetic_shapes()
            extra = {"train_defaults": synthetic_spec().get("train_defaults") or {}}
        else:
            yaml_file = _resolve_yaml(path_or_name)
            extra = {}
        try:
            cfg = yaml.safe_load(yaml_file.read_text()) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"data YAML {yaml_file}: not valid YAML ({e})") from None
        if not isinstance(cfg, dict):
            raise ValueError(f"data YAML {yaml_file}: expected a mapping at the top level")
        for k, v in extra.items():
            cfg.setdefault(k, v)
        base = data_dir() if yaml_file.parent == PACKAGED_DIR else yaml_file.parent

    for k in ("train", "val"):
        if k not in cfg:
            raise ValueError(f"data YAML {yaml_file}: missing required key '{k}'")
    root = Path(str(cfg.get("path") or ".")).expanduser()
    if not root.is_absolute():
        root = (base / root).resolve()

    def resolve(v):
        if v is None:
            return None
        if isinstance(v, (list, tuple)):
            return [resolve(x) for x in v]
        p = Path(str(v)).expanduser()
        return str(p if p.is_absolute() else (root / p).resolve())

    out = dict(cfg)
    out["path"] = str(root)
    for k in SPLITS:
        out[k] = resolve(cfg.get(k))
    out["names"] = _normalize_names(cfg.get("names"), cfg.get("nc"), yaml_file)
    out["nc"] = len(out["names"])
    out["yaml_file"] = str(yaml_file)

    missing = [p for k in ("train", "val") for p in _as_list(out[k]) if not Path(p).exists()]
    if missing:
        url = cfg.get("download")
        if not url:
            raise FileNotFoundError(f"data YAML {yaml_file}: missing {', '.join(missing)} and no 'download' key")
        _download(str(url), root.parent if root.name else root, yaml_file, cfg.get("download_sha256"))
        still = [p for p in missing if not Path(p).exists()]
        if still:
            raise FileNotFoundError(
                f"data YAML {yaml_file}: downloaded {url} but {', '.join(still)} still does not exist"
            )
    return out


def _as_list(v):
    if v is None:
        return []
    return list(v) if isinstance(v, (list, tuple)) else [v]
