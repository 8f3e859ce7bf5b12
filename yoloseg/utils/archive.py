"""Safe archive extraction: the one place where yoloseg unpacks a zip or tar archive.

``extract_archive(archive, dest)`` unpacks into a temporary folder beside the final entries (inside ``dest``) and
moves the result into place only when every member was accepted, so a refused or broken archive leaves nothing
under its final names. Each member is checked before it is written:

- its path must be relative and must resolve, following links already unpacked, inside the destination;
- a symbolic link must be relative and point inside the destination; a hard link must name a file inside it;
- devices, FIFOs and other special files are refused;
- the member count and the total unpacked bytes are capped (``max_files``, ``max_bytes``; defaults fit
  COCO-sized sets, the environment variables ``YOLOSEG_UNPACK_MAX_FILES`` / ``YOLOSEG_UNPACK_MAX_BYTES``
  raise them), and the unpacked bytes must fit in the free disk space.

tar: the checks above run for every member; on Pythons whose ``tarfile`` has extraction filters (3.11.4+, 3.12+)
``tarfile.data_filter`` runs after them as a second layer, which also drops set-uid bits, group/other write bits and
the archive's owners. Elsewhere the same modes are applied here. zip: ``zipfile`` itself would silently drop
``..`` components, drive letters and leading slashes and write links and devices as plain files; here members are
written one by one with the checks above instead, so such members are refused, not rewritten.
"""

from __future__ import annotations

import copy
import errno
import os
import re
import shutil
import stat
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_FILES", "UnsafeArchiveError", "extract_archive", "unpack_limits"]

# COCO 2017 (train + val + test images, annotations) unpacks to about 20 GB in about 250k files with YOLO labels.
DEFAULT_MAX_BYTES = 64 * 1024**3
DEFAULT_MAX_FILES = 1_000_000
MAX_LINK_HOPS = 40  # like the kernel's ELOOP limit
MAX_PATH_CHARS = 4000
TMP_PREFIX = ".yoloseg-unpack-"
_STALE_S = 3600

# Whether tarfile's own "data" filter is applied after our checks. An internal switch so that the code path for
# Pythons without extraction filters (before 3.11.4) is exercised on every Python.
_TAR_DATA_FILTER = hasattr(tarfile, "data_filter")


class UnsafeArchiveError(ValueError):
    """An archive member was refused. ``member`` is its name (None for the archive as a whole), ``reason`` why."""

    def __init__(self, archive, member: str | None, reason: str, message: str | None = None):
        self.archive, self.member, self.reason = str(archive), member, reason
        where = f"member {member!r} refused: " if member is not None else "refused: "
        super().__init__(message or f"archive {self.archive}: {where}{reason}")


def _parse_size(text: str, var: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", text.lower())
    if not m:
        raise ValueError(f"{var}={text!r}: expected a number, optionally with K, M, G or T (e.g. 100G)")
    return int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2) or " "))


def unpack_limits(max_bytes: int | None = None, max_files: int | None = None) -> tuple[int, int]:
    """The caps to use: explicit values, else ``$YOLOSEG_UNPACK_MAX_BYTES`` / ``$YOLOSEG_UNPACK_MAX_FILES``, else
    the defaults. A malformed or non-positive value is an error naming the variable."""
    out = []
    for value, var, default, parse in (
        (max_bytes, "YOLOSEG_UNPACK_MAX_BYTES", DEFAULT_MAX_BYTES, _parse_size),
        (max_files, "YOLOSEG_UNPACK_MAX_FILES", DEFAULT_MAX_FILES, None),
    ):
        if value is None:
            env = os.environ.get(var, "").strip()
            if not env:
                value = default
            elif parse is not None:
                value = parse(env, var)
            else:
                try:
                    value = int(env)
                except ValueError:
                    raise ValueError(f"{var}={env!r}: expected a whole number of archive members") from None
            if value <= 0:
                raise ValueError(f"{var}={env!r}: must be positive")
        elif int(value) <= 0:
            raise ValueError(f"{'max_bytes' if var.endswith('BYTES') else 'max_files'}={value}: must be positive")
        out.append(int(value))
    return out[0], out[1]


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class _Guard:
    """Per-archive state: where members go, what was counted, and the checks every member passes."""

    def __init__(self, archive, root: str, max_bytes: int, max_files: int):
        self.archive, self.root = str(archive), root
        self.max_bytes, self.max_files = max_bytes, max_files
        self.files = 0
        self.bytes = 0
        self.sizes: dict[str, int] = {}  # tar: size of each regular member so far (a hard link may copy it)
        self.free = shutil.disk_usage(root).free

    def refuse(self, member, reason):
        raise UnsafeArchiveError(self.archive, member, reason)

    def count(self, name: str, size: int) -> None:
        self.files += 1
        if self.files > self.max_files:
            self.refuse(name, f"the archive has more than {self.max_files} members (the cap; raise it with "
                              f"YOLOSEG_UNPACK_MAX_FILES if the data set really is that large)")
        self.add_bytes(name, size)

    def add_bytes(self, name: str, size: int) -> None:
        self.bytes += size
        if self.bytes > self.max_bytes:
            self.refuse(name, f"the archive unpacks to more than {_fmt_bytes(self.max_bytes)} (the cap; raise it "
                              f"with YOLOSEG_UNPACK_MAX_BYTES, e.g. YOLOSEG_UNPACK_MAX_BYTES=200G, if the data set "
                              f"really is that large)")
        if self.bytes > self.free:
            self.refuse(name, f"the archive unpacks to more than the {_fmt_bytes(self.free)} free on the disk of "
                              f"{self.root}")

    def resolve(self, name: str, rel: str, follow_last: bool = True) -> list[str]:
        """Components (relative to root) of ``rel`` after following the links already on disk, as the kernel
        would. Refuses a path that leaves the destination, loops, is too long or cannot be resolved."""
        if rel.startswith(("/", os.sep)) or os.path.isabs(rel) or re.match(r"^[A-Za-z]:", rel):
            self.refuse(name, "it has an absolute path")
        todo = [p for p in rel.replace(os.sep, "/").split("/") if p not in ("", ".")]
        todo.reverse()  # a stack: the next component is last
        cur: list[str] = []
        hops = 0
        while todo:
            part = todo.pop()
            if part == "..":
                if not cur:
                    self.refuse(name, "its path resolves outside the destination folder")
                cur.pop()
                continue
            cur.append(part)
            if not follow_last and not todo:
                break
            full = os.path.join(self.root, *cur)
            if len(full) > MAX_PATH_CHARS:
                self.refuse(name, f"its path is longer than {MAX_PATH_CHARS} characters once links are followed")
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                continue  # not there yet: what follows cannot be a link either
            except OSError as e:
                self.refuse(name, f"its path cannot be resolved ({e.strerror})")
            if stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > MAX_LINK_HOPS:
                    self.refuse(name, "its path goes through too many links")
                target = os.readlink(full)
                if os.path.isabs(target):
                    self.refuse(name, "its path goes through a link with an absolute target")
                cur.pop()
                todo.extend(reversed([p for p in target.split("/") if p not in ("", ".")]))
        return cur

    def check_path(self, name: str, is_dir: bool = False) -> str:
        """The real path a regular file or folder member ``name`` would be written to (links followed)."""
        parts = self.resolve(name, name)
        if not parts and not is_dir:
            self.refuse(name, "its name is empty (it would replace the destination folder itself)")
        return os.path.join(self.root, *parts)

    def check_link_name(self, name: str) -> list[str]:
        """The components of a link member's own path: its folder with links followed, then its last name."""
        parts = self.resolve(name, name, follow_last=False)
        if not parts:
            self.refuse(name, "its name is empty (it would replace the destination folder itself)")
        return parts

    def check_symlink(self, name: str, target: str) -> None:
        if not target:
            self.refuse(name, "it is a symbolic link with an empty target")
        if os.path.isabs(target) or target.startswith(("/", os.sep)):
            self.refuse(name, f"it is a symbolic link with an absolute target ({target!r})")
        if len(target) > MAX_PATH_CHARS:
            self.refuse(name, "its link target is too long")
        parent = self.check_link_name(name)[:-1]  # the folder the link is made in, links followed
        self.resolve(name, "/".join([*parent, target]))

    def check_hardlink(self, name: str, target: str) -> None:
        if os.path.isabs(target) or target.startswith(("/", os.sep)):
            self.refuse(name, f"it is a hard link to an absolute path ({target!r})")
        if not self.resolve(name, target):
            self.refuse(name, f"it is a hard link to the destination folder itself ({target!r})")
        self.check_link_name(name)


def _link_message(e: UnsafeArchiveError, target: str) -> UnsafeArchiveError:
    """Say that it is the link's target that leaves the destination."""
    if "absolute" in e.reason:
        return UnsafeArchiveError(e.archive, e.member, f"it is a link to {target!r}, an absolute path")
    if "outside" in e.reason:
        return UnsafeArchiveError(e.archive, e.member, f"it is a link to {target!r}, which resolves outside the "
                                                       f"destination folder")
    return e


# --- tar --------------------------------------------------------------------------------------------------------


def _tar_filter(guard: _Guard):
    def check(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
        name = member.name
        if member.isreg():
            guard.sizes[os.path.normpath(name)] = member.size
        # tarfile copies a hard link's target out of the archive when it cannot link it: count those bytes too
        linked = guard.sizes.get(os.path.normpath(member.linkname), 0) if member.islnk() else 0
        guard.count(name, member.size if member.isreg() else linked)
        if member.isreg() or member.isdir():
            guard.check_path(name, member.isdir())
        elif member.issym():
            try:
                guard.check_symlink(name, member.linkname)
            except UnsafeArchiveError as e:
                raise _link_message(e, member.linkname) from None
        elif member.islnk():
            try:
                guard.check_hardlink(name, member.linkname)
            except UnsafeArchiveError as e:
                raise _link_message(e, member.linkname) from None
        else:
            kind = {tarfile.CHRTYPE: "a character device", tarfile.BLKTYPE: "a block device",
                    tarfile.FIFOTYPE: "a FIFO"}.get(member.type, f"a special file (tar type {member.type!r})")
            guard.refuse(name, f"it is {kind}; only files, folders and links are unpacked")
        if _TAR_DATA_FILTER:  # the standard library's own checks and attribute clean-up, as a second layer
            try:
                return tarfile.data_filter(member, path)
            except tarfile.FilterError as e:
                guard.refuse(name, str(e))
        out = copy.copy(member)
        if member.isreg() or member.islnk():
            mode = member.mode & 0o755
            out.mode = (mode if mode & 0o100 else mode & ~0o111) | 0o600
        else:
            out.mode = 0o755  # folders (links keep none): readable and removable whatever the archive says
        if hasattr(os, "getuid"):  # tarfile changes owners only when run as root: keep them ours
            out.uid, out.gid, out.uname, out.gname = os.getuid(), os.getgid(), "", ""
        return out

    return check


def _extract_tar(archive: Path, guard: _Guard) -> None:
    with tarfile.open(archive, "r:*") as tar:
        tar.errorlevel = 1
        check = _tar_filter(guard)
        if _TAR_DATA_FILTER:
            tar.extractall(guard.root, filter=check)
        else:
            members = (check(m, guard.root) for m in tar)
            if hasattr(tarfile, "fully_trusted_filter"):  # the switch is off on a Python that has filters
                tar.extractall(guard.root, members=members, filter="fully_trusted")
            else:
                tar.extractall(guard.root, members=members)


# --- zip --------------------------------------------------------------------------------------------------------


def _extract_zip(archive: Path, guard: _Guard) -> None:
    with zipfile.ZipFile(archive) as z:
        infos = z.infolist()
        # the central directory states every member and size up front: refuse a bomb before writing anything
        probe = _Guard(guard.archive, guard.root, guard.max_bytes, guard.max_files)
        for info in infos:
            probe.count(info.filename, info.file_size)
        for info in infos:
            name = info.filename
            mode = info.external_attr >> 16 if info.create_system == 3 else 0  # unix modes
            kind = stat.S_IFMT(mode)
            guard.count(name, 0)
            if kind and kind not in (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK):
                guard.refuse(name, "it is a device, FIFO or socket; only files, folders and links are unpacked")
            if kind == stat.S_IFLNK:
                if info.file_size > MAX_PATH_CHARS:
                    guard.refuse(name, "its link target is too long")
                target = z.read(info).decode("utf-8", "surrogateescape")
                try:
                    guard.check_symlink(name, target)
                except UnsafeArchiveError as e:
                    raise _link_message(e, target) from None
                parts = guard.check_link_name(name)
                os.makedirs(os.path.join(guard.root, *parts[:-1]), exist_ok=True)
                path = os.path.join(guard.root, *parts)
                if os.path.lexists(path):
                    os.unlink(path)
                os.symlink(target, path)
                continue
            is_dir = info.is_dir() or kind == stat.S_IFDIR
            path = guard.check_path(name, is_dir)
            if is_dir:
                os.makedirs(path, exist_ok=True)
                continue
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with z.open(info) as src, open(path, "wb") as dst:
                while True:
                    chunk = src.read(1 << 20)
                    if not chunk:
                        break
                    guard.add_bytes(name, len(chunk))
                    dst.write(chunk)
            if mode & 0o100:
                os.chmod(path, 0o755)


# --- moving into place ------------------------------------------------------------------------------------------


def _move_into(src: Path, dst: Path, dry_run: bool = False) -> None:
    """Move every entry of folder ``src`` into folder ``dst``; folders that exist on both sides are merged, files
    replaced. With ``dry_run`` only look for a file/folder clash (FileExistsError), so that none is met midway."""
    for entry in sorted(os.listdir(src)):
        s, d = src / entry, dst / entry
        s_dir = s.is_dir() and not s.is_symlink()
        if s_dir and d.is_dir():
            _move_into(s, d, dry_run)
            continue
        if os.path.lexists(d) and (s_dir or (d.is_dir() and not d.is_symlink())):
            have, new = ("a file", "a folder") if s_dir else ("a folder", "a file")
            raise FileExistsError(f"cannot unpack into {d}: it is {have} and the archive has {new} there; move it "
                                  f"away and run again")
        if dry_run:
            continue
        try:
            os.replace(s, d)
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            shutil.move(str(s), str(d))  # another file system (dst reached through a link of the user's)


def _remove_stale(dest: Path) -> None:
    """Leftovers of an unpack that was killed (an hour old or more)."""
    now = time.time()
    for p in dest.glob(TMP_PREFIX + "*"):
        try:
            if p.is_dir() and now - p.stat().st_mtime > _STALE_S:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def _kind(archive: Path) -> str:
    if zipfile.is_zipfile(archive):
        return "zip"
    try:
        with tarfile.open(archive, "r:*"):
            return "tar"
    except (tarfile.TarError, OSError, EOFError):
        pass
    raise UnsafeArchiveError(archive, None, "it is not a zip or tar archive (.zip, .tar, .tar.gz, .tar.bz2, .tar.xz)")


def extract_archive(archive: str | Path, dest: str | Path, *, max_bytes: int | None = None,
                    max_files: int | None = None) -> list[Path]:
    """Unpack the zip or tar archive ``archive`` into folder ``dest`` (created if needed) with the checks of this
    module; returns the top-level paths it put there. A refused member raises :class:`UnsafeArchiveError` naming
    the member and the reason, and nothing is left in ``dest``. ``max_bytes``/``max_files`` default to the
    environment variables ``YOLOSEG_UNPACK_MAX_BYTES`` / ``YOLOSEG_UNPACK_MAX_FILES``, else to
    :data:`DEFAULT_MAX_BYTES` / :data:`DEFAULT_MAX_FILES`."""
    archive, dest = Path(archive), Path(dest)
    max_bytes, max_files = unpack_limits(max_bytes, max_files)
    kind = _kind(archive)
    dest.mkdir(parents=True, exist_ok=True)
    _remove_stale(dest)
    tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, dir=dest))
    try:
        guard = _Guard(archive, os.path.realpath(tmp), max_bytes, max_files)
        try:
            (_extract_zip if kind == "zip" else _extract_tar)(archive, guard)
        except UnsafeArchiveError:
            raise
        except (tarfile.TarError, zipfile.BadZipFile, EOFError, RuntimeError, OSError, ValueError) as e:
            raise UnsafeArchiveError(archive, None, f"it could not be unpacked ({type(e).__name__}: {e})") from e
        top = sorted(os.listdir(tmp))
        _move_into(tmp, dest, dry_run=True)
        _move_into(tmp, dest)
        return [dest / t for t in top]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
