"""A data YAML's `download:` archive, served from a local HTTP server on 127.0.0.1 started by each test.

Every hostile archive is refused with an error naming the YAML, the URL, the member and why, and each test lists
every folder above the destination before and after (file contents included) to show that nothing was written
outside it, nor anything left inside it. tar archives are tried with tarfile's own "data" filter as the second
layer and without it (the code path of Pythons that lack extraction filters).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import stat
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

import yoloseg.utils.archive as archive_mod
from yoloseg.data.download import ChecksumError, DownloadError, download_file
from yoloseg.data.yaml import check_data_yaml
from yoloseg.utils.archive import UnsafeArchiveError, extract_archive

JPEG = cv2.imencode(".jpg", np.full((8, 8, 3), 127, np.uint8))[1].tobytes()


# --- the local server -------------------------------------------------------------------------------------------


class _Server:
    """Serves ``files[path]`` with HTTP range support; ``cut[path] = n`` sends only n bytes of a full-length answer
    (once when ``cut_once``), ``stall`` paths wait until the test ends. Records each request's Range header."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cut: dict[str, int] = {}
        self.cut_once = True
        self.stall: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []
        self.stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                if self.path in server.stall:
                    server.stop.wait(10)
                    return
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = int(rng[6:].rstrip("-")) if rng else 0
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                n = server.cut.get(self.path)
                if n is not None and not rng:
                    if server.cut_once:
                        del server.cut[self.path]
                    self.wfile.write(body[start:start + n])
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.01,), daemon=True)
        self.thread.start()

    def serve(self, path: str, body: bytes) -> str:
        self.files[path] = body
        return self.base + path

    def close(self):
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.close()


# --- archives ---------------------------------------------------------------------------------------------------


def _tar(entries, mode="w:gz") -> bytes:
    """entries: (kind, name, arg) with kind file (arg bytes), dir, sym/hard (arg link name), chr, fifo."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as t:
        for kind, name, *arg in entries:
            ti = tarfile.TarInfo(name)
            ti.mode = 0o644
            if kind == "file":
                ti.size = len(arg[0])
                t.addfile(ti, io.BytesIO(arg[0]))
                continue
            ti.type, ti.mode = {"dir": (tarfile.DIRTYPE, 0o755), "sym": (tarfile.SYMTYPE, 0o777),
                                "hard": (tarfile.LNKTYPE, 0o644), "chr": (tarfile.CHRTYPE, 0o666),
                                "fifo": (tarfile.FIFOTYPE, 0o644)}[kind]
            if kind in ("sym", "hard"):
                ti.linkname = arg[0]
            if kind == "chr":
                ti.devmajor, ti.devminor = 1, 3  # /dev/null's numbers
            t.addfile(ti)
    return buf.getvalue()


def _zip(entries) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for kind, name, *arg in entries:
            zi = zipfile.ZipInfo(name)
            zi.create_system = 3  # unix modes in external_attr
            zi.compress_type = zipfile.ZIP_DEFLATED
            mode = {"file": stat.S_IFREG | 0o644, "sym": stat.S_IFLNK | 0o777, "chr": stat.S_IFCHR | 0o666,
                    "fifo": stat.S_IFIFO | 0o644}[kind]
            zi.external_attr = mode << 16
            z.writestr(zi, arg[0] if kind in ("file", "sym") else b"")
    return buf.getvalue()


def _good_entries():
    return [("file", f"myset/{d}/{s}/a{i}.{'jpg' if d == 'images' else 'txt'}",
             JPEG if d == "images" else b"0 0.1 0.1 0.5 0.1 0.5 0.5\n")
            for d in ("images", "labels") for s in ("train", "val") for i in range(2)]


FORMATS = ["tar-filter", "tar-fallback", "zip"]


@pytest.fixture(params=FORMATS)
def fmt(request, monkeypatch):
    """The archive kind; for tar, whether tarfile's data filter runs after our checks (off: our checks alone)."""
    if request.param == "tar-filter" and not hasattr(tarfile, "data_filter"):
        pytest.skip("this Python's tarfile has no extraction filters")
    monkeypatch.setattr(archive_mod, "_TAR_DATA_FILTER", request.param == "tar-filter")
    return request.param


@pytest.fixture(params=["tar-filter", "tar-fallback"])
def tar_fmt(request, monkeypatch):
    """tar only (hard links): with and without tarfile's data filter after our checks."""
    if request.param == "tar-filter" and not hasattr(tarfile, "data_filter"):
        pytest.skip("this Python's tarfile has no extraction filters")
    monkeypatch.setattr(archive_mod, "_TAR_DATA_FILTER", request.param == "tar-filter")
    return request.param


def _pack(fmt, entries) -> tuple[bytes, str]:
    if fmt == "zip":
        return _zip(entries), ".zip"
    return _tar(entries), ".tar.gz"


# --- the user's folders -----------------------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path, monkeypatch):
    """tmp/home/user/set.yaml with path datasets/myset, so the archive unpacks into tmp/home/user/datasets.
    Outside it: a victim file and folder that a hostile archive would want to reach."""
    monkeypatch.delenv("YOLOSEG_OFFLINE", raising=False)
    for var in ("YOLOSEG_UNPACK_MAX_BYTES", "YOLOSEG_UNPACK_MAX_FILES"):
        monkeypatch.delenv(var, raising=False)
    user = tmp_path / "home" / "user"
    (user / "datasets" / "other-set").mkdir(parents=True)
    (user / "datasets" / "other-set" / "keep.txt").write_text("another data set")
    (tmp_path / "home" / "victim.txt").write_text("secret")
    (tmp_path / "home" / "victim_dir").mkdir()
    (user / "notes.txt").write_text("user file")
    return user


def _yaml(home: Path, url: str, **extra) -> Path:
    y = home / "set.yaml"
    y.write_text(yaml.safe_dump({"path": "datasets/myset", "train": "images/train", "val": "images/val",
                                 "names": ["a"], "download": url, **extra}))
    return y


def _listing(root: Path, skip: Path | None = None) -> dict:
    """Every entry under root (links not followed), with file contents and link targets; ``skip`` left out."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        if skip is not None and (d == skip or skip in d.parents):
            dirnames[:] = []
            continue
        for n in dirnames + filenames:
            p = d / n
            if skip is not None and p == skip:
                continue
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[str(p.relative_to(root))] = ("link", os.readlink(p))
            elif stat.S_ISREG(st.st_mode):
                out[str(p.relative_to(root))] = ("file", p.read_bytes(), st.st_nlink)
            else:
                out[str(p.relative_to(root))] = ("dir" if stat.S_ISDIR(st.st_mode) else "special",)
    return out


def _refused(home: Path, url: str, member: str | None, why: str, **extra) -> UnsafeArchiveError:
    """check_data_yaml refuses; nothing changed above the destination, nor in it."""
    tmp = home.parent.parent
    dest = home / "datasets"
    outside, inside = _listing(tmp, skip=dest), _listing(dest)
    y = _yaml(home, url, **extra)
    outside[str(y.relative_to(tmp))] = ("file", y.read_bytes(), 1)
    with pytest.raises(UnsafeArchiveError) as e:
        check_data_yaml(y)
    msg = str(e.value)
    assert str(y) in msg and url in msg and why in msg, msg
    if member is not None:
        assert e.value.member == member and repr(member) in msg, msg
    assert _listing(tmp, skip=dest) == outside
    assert _listing(dest) == inside  # no temp folder, no archive, nothing half-unpacked
    return e.value


# --- the tests --------------------------------------------------------------------------------------------------


def test_good_archive_unpacks_with_checksum_and_warns_about_plain_http(server, home, fmt, caplog):
    body, ext = _pack(fmt, _good_entries())
    url = server.serve("/myset" + ext, body)
    tmp = home.parent.parent
    outside = _listing(tmp, skip=home / "datasets")
    y = _yaml(home, url, download_sha256=hashlib.sha256(body).hexdigest().upper())
    outside[str(y.relative_to(tmp))] = ("file", y.read_bytes(), 1)
    with caplog.at_level(logging.WARNING, logger="yoloseg"):
        d = check_data_yaml(y)
    assert d["train"] == str(home / "datasets" / "myset" / "images" / "train")
    root = home / "datasets" / "myset"
    assert (root / "images" / "val" / "a1.jpg").read_bytes() == JPEG
    assert (root / "labels" / "train" / "a0.txt").read_text().startswith("0 0.1")
    assert stat.S_IMODE((root / "images" / "train" / "a0.jpg").stat().st_mode) & 0o600 == 0o600
    assert sorted(os.listdir(home / "datasets")) == ["myset", "other-set"]  # no temp folder, no archive left
    assert (home / "datasets" / "other-set" / "keep.txt").read_text() == "another data set"
    assert _listing(tmp, skip=home / "datasets") == outside
    http_warnings = [r.getMessage() for r in caplog.records if "plain http://" in r.getMessage()]
    assert len(http_warnings) == 1 and url in http_warnings[0] and "replace" in http_warnings[0]
    assert check_data_yaml(y)["nc"] == 1 and len(server.requests) == 1  # present now: no second download


def test_good_archive_merges_into_an_existing_set_folder(server, home, fmt):
    (home / "datasets" / "myset" / "images" / "test").mkdir(parents=True)
    (home / "datasets" / "myset" / "images" / "test" / "mine.jpg").write_bytes(JPEG)
    body, ext = _pack(fmt, _good_entries())
    check_data_yaml(_yaml(home, server.serve("/s" + ext, body)))
    assert (home / "datasets" / "myset" / "images" / "test" / "mine.jpg").read_bytes() == JPEG
    assert (home / "datasets" / "myset" / "images" / "train" / "a0.jpg").is_file()


def test_clash_with_an_existing_file_moves_nothing(server, home):
    (home / "datasets" / "myset" / "labels").mkdir(parents=True)
    (home / "datasets" / "myset" / "labels" / "val").write_text("a file where the archive has a folder")
    inside = _listing(home / "datasets")
    with pytest.raises(FileNotFoundError, match="labels/val: it is a file and the archive has a folder"):
        check_data_yaml(_yaml(home, server.serve("/s.zip", _zip(_good_entries()))))
    assert _listing(home / "datasets") == inside  # images/ sorts first but was not moved either


def test_dotdot_member_is_refused(server, home, fmt):
    body, ext = _pack(fmt, [*_good_entries(), ("file", "../../zs_escaped.txt", b"escaped")])
    _refused(home, server.serve("/dd" + ext, body), "../../zs_escaped.txt", "resolves outside the destination")
    assert not list(home.parent.parent.rglob("zs_escaped.txt"))


def test_dotdot_inside_the_archive_is_allowed_where_it_stays_inside(server, home, fmt):
    entries = [*_good_entries(), ("file", "myset/images/../labels/extra.txt", b"x")]
    body, ext = _pack(fmt, entries)
    check_data_yaml(_yaml(home, server.serve("/ok" + ext, body)))
    assert (home / "datasets" / "myset" / "labels" / "extra.txt").read_bytes() == b"x"


def test_absolute_member_is_refused(server, home, fmt):
    target = str(home.parent / "abs_escaped.txt")
    body, ext = _pack(fmt, [("file", target, b"escaped"), *_good_entries()])
    _refused(home, server.serve("/abs" + ext, body), target, "absolute path")
    assert not (home.parent / "abs_escaped.txt").exists()


@pytest.mark.parametrize("link", ["../../../victim_dir", "ABS", "chain"])
def test_symlink_out_then_write_through_it_is_refused(server, home, fmt, link):
    victim_dir = home.parent / "victim_dir"
    if link == "chain":
        # each link alone points inside; followed one after the other they leave the destination
        entries = [("dir", "d/e", None), ("sym", "d/e/up", "../.."), ("sym", "esc", "d/e/up/../.."),
                   ("file", "esc/pwned.txt", b"written through a link")]
        bad, why = "esc", "outside the destination"
    else:
        target = str(victim_dir) if link == "ABS" else link
        entries = [("sym", "myset/out", target), ("file", "myset/out/pwned.txt", b"written through a link")]
        bad, why = "myset/out", ("an absolute path" if link == "ABS" else "outside the destination")
    if fmt == "zip":
        entries = [e for e in entries if e[0] != "dir"]
    body, ext = _pack(fmt, entries)
    _refused(home, server.serve("/sym" + ext, body), bad, why)
    assert os.listdir(victim_dir) == [] and not list(home.parent.parent.rglob("pwned.txt"))


def test_links_that_outgrow_path_max_are_refused(server, home, tar_fmt):
    """Links whose expansion is longer than PATH_MAX: a resolver that gives up there (os.path.realpath, hence
    tarfile's data filter before CVE-2025-4517 was fixed, as in Python 3.11.7) takes the last link for a plain
    name and misses that "escape" points two folders above the destination."""
    comp, steps = "d" * 247, "abcdefghijklmnop"
    entries, path = [], ""
    for s in steps:
        entries += [("dir", f"{path}{comp}"), ("sym", f"{path}{s}", comp)]
        path += comp + "/"
    longlink = "/".join([*steps, "l" * 254])
    entries += [("sym", longlink, "/".join([".."] * len(steps))), ("sym", "escape", longlink + "/../.."),
                ("file", "escape/flag.txt", b"escaped")]
    _refused(home, server.serve("/long.tar", _tar(entries, mode="w")), None, "longer than 4000 characters")
    assert not list(home.parent.parent.rglob("flag.txt"))


def test_empty_names_are_refused(server, home, tar_fmt):
    for entries in ([("sym", "", "..")], [("file", "./", b"x")], [("hard", "myset/x", ".")]):
        body = _tar([*_good_entries(), *entries], mode="w")
        _refused(home, server.serve("/empty.tar", body), entries[0][1], "destination folder itself")


@pytest.mark.parametrize("absolute", [False, True])
def test_hard_link_out_is_refused(server, home, tar_fmt, absolute):
    victim = home.parent / "victim.txt"
    target = str(victim) if absolute else "../../../victim.txt"
    # the link, then a file of the same name: unchecked, that write truncates and rewrites the victim's data
    body = _tar([("hard", "myset/hl", target), ("file", "myset/hl", b"overwritten")])
    _refused(home, server.serve("/hl.tar.gz", body), "myset/hl", "absolute" if absolute else "outside")
    assert victim.read_text() == "secret" and victim.stat().st_nlink == 1


def test_hard_link_inside_is_unpacked(server, home, tar_fmt):
    body = _tar([*_good_entries(), ("hard", "myset/images/train/same.jpg", "myset/images/train/a0.jpg")])
    check_data_yaml(_yaml(home, server.serve("/hl.tar.gz", body)))
    assert (home / "datasets" / "myset" / "images" / "train" / "same.jpg").read_bytes() == JPEG


@pytest.mark.parametrize("kind", ["chr", "fifo"])
def test_device_node_and_fifo_are_refused(server, home, fmt, kind):
    body, ext = _pack(fmt, [*_good_entries(), (kind, "myset/dev", None)])
    why = "FIFO" if kind == "fifo" else "device"
    _refused(home, server.serve("/dev" + ext, body), "myset/dev", why)


def test_bomb_over_the_byte_cap_is_refused_and_the_setting_raises_it(server, home, fmt, monkeypatch):
    entries = [*_good_entries(), ("file", "myset/zeros.bin", bytes(1 << 20))]  # 1 MiB that packs to ~1 KiB
    body, ext = _pack(fmt, entries)
    assert len(body) < 10_000
    url = server.serve("/bomb" + ext, body)
    monkeypatch.setenv("YOLOSEG_UNPACK_MAX_BYTES", "256K")
    e = _refused(home, url, "myset/zeros.bin", "YOLOSEG_UNPACK_MAX_BYTES")
    assert "256.0 KiB" in str(e)
    monkeypatch.setenv("YOLOSEG_UNPACK_MAX_BYTES", "2M")
    check_data_yaml(home / "set.yaml")
    assert (home / "datasets" / "myset" / "zeros.bin").stat().st_size == 1 << 20


def test_member_count_over_the_cap_is_refused_and_the_setting_raises_it(server, home, fmt, monkeypatch):
    entries = [*_good_entries(), *[("file", f"myset/many/{i}.txt", b"") for i in range(40)]]
    body, ext = _pack(fmt, entries)
    url = server.serve("/many" + ext, body)
    monkeypatch.setenv("YOLOSEG_UNPACK_MAX_FILES", "20")
    _refused(home, url, "myset/many/12.txt", "more than 20 members")
    monkeypatch.setenv("YOLOSEG_UNPACK_MAX_FILES", "100")
    check_data_yaml(home / "set.yaml")
    assert len(os.listdir(home / "datasets" / "myset" / "many")) == 40


def test_bad_cap_setting_is_refused_before_downloading(server, home, monkeypatch):
    url = server.serve("/x.zip", _zip(_good_entries()))
    monkeypatch.setenv("YOLOSEG_UNPACK_MAX_BYTES", "lots")
    with pytest.raises(ValueError, match="YOLOSEG_UNPACK_MAX_BYTES='lots'"):
        check_data_yaml(_yaml(home, url))
    assert server.requests == []


def test_checksum_mismatch_is_refused_before_unpacking(server, home):
    body = _zip(_good_entries())
    url = server.serve("/sum.zip", body)
    tmp, dest = home.parent.parent, home / "datasets"
    outside, inside = _listing(tmp, skip=dest), _listing(dest)
    y = _yaml(home, url, download_sha256="ab" * 32)
    with pytest.raises(ChecksumError) as e:
        check_data_yaml(y)
    msg = str(e.value)
    assert str(y) in msg and url in msg and "ab" * 32 in msg and hashlib.sha256(body).hexdigest() in msg
    assert _listing(dest) == inside  # nothing unpacked, the download deleted
    outside[str(y.relative_to(tmp))] = ("file", y.read_bytes(), 1)
    assert _listing(tmp, skip=dest) == outside


def test_malformed_checksum_key_is_refused_before_downloading(server, home):
    y = _yaml(home, server.serve("/x.zip", b"PK"), download_sha256="1234")
    with pytest.raises(ValueError, match="download_sha256.*64 hexadecimal"):
        check_data_yaml(y)
    assert server.requests == []


def test_broken_transfer_resumes_with_a_range_request(server, home):
    body = _tar(_good_entries(), mode="w")  # uncompressed: large enough to cut
    url = server.serve("/cut.tar", body)
    server.cut["/cut.tar"] = 1000
    check_data_yaml(_yaml(home, url))
    assert server.requests == [("/cut.tar", None), ("/cut.tar", "bytes=1000-")]
    assert (home / "datasets" / "myset" / "images" / "train" / "a0.jpg").read_bytes() == JPEG


def test_failed_transfer_keeps_the_part_and_the_next_run_resumes(server, home):
    body = _tar(_good_entries(), mode="w")
    url = server.serve("/cut.tar", body)
    server.cut["/cut.tar"] = 1000
    # without retries the first run stops after the cut; the next run asks for the rest only
    with pytest.raises(DownloadError) as e:
        download_file(url, home / "x.tar", retries=0, progress=False)
    assert "1000 bytes are kept" in str(e.value) and "run again to resume" in str(e.value)
    assert (home / "x.tar.part").stat().st_size == 1000
    server.cut.clear()
    download_file(url, home / "x.tar", progress=False)
    assert server.requests[-1] == ("/cut.tar", "bytes=1000-")
    assert (home / "x.tar").read_bytes() == body and not (home / "x.tar.part").exists()


def test_stalled_server_times_out_with_a_retry_message(server, home):
    server.stall.add("/slow.zip")
    with pytest.raises(DownloadError) as e:
        download_file(server.base + "/slow.zip", home / "slow.zip", timeout=0.3, progress=False)
    assert "timeout" in str(e.value) and "nothing was kept" in str(e.value) and "run again" in str(e.value)
    assert not (home / "slow.zip").exists() and not (home / "slow.zip.part").exists()


def test_http_error_and_not_an_archive(server, home):
    with pytest.raises(FileNotFoundError, match="HTTP 404"):
        check_data_yaml(_yaml(home, server.base + "/missing.zip"))
    e = _refused(home, server.serve("/page.zip", b"<html>not an archive</html>"), None, "not a zip or tar archive")
    assert e.member is None


def test_extract_archive_direct_use_refuses_and_leaves_dest_alone(tmp_path):
    """The helper as other code calls it: explicit caps, same refusal, nothing under dest."""
    a = tmp_path / "a.tar"
    a.write_bytes(_tar([("file", "ok.txt", b"1"), ("file", "../x.txt", b"2")], mode="w"))
    dest = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match="member '../x.txt' refused: its path resolves outside"):
        extract_archive(a, dest)
    assert os.listdir(dest) == [] and sorted(os.listdir(tmp_path)) == ["a.tar", "out"]
    with pytest.raises(ValueError, match="max_files=0"):
        extract_archive(a, dest, max_files=0)
    a.write_bytes(_tar([("file", "ok.txt", b"1")], mode="w"))
    assert extract_archive(a, dest, max_bytes=1, max_files=1) == [dest / "ok.txt"]


def test_archive_helper_is_the_only_extraction_site():
    """Every unpack goes through yoloseg.utils.archive: no other module of the package or its plugins extracts."""
    import re

    repo = Path(__file__).resolve().parents[1]
    pattern = re.compile(r"\bextractall\(|\bunpack_archive\(|\.extract\(|tarfile\.open\(|TarFile\(")
    found = []
    for top in ("yoloseg", "plugins", "bench"):
        for f in (repo / top).rglob("*.py"):
            if f.relative_to(repo).as_posix() != "yoloseg/utils/archive.py":
                found += [f"{f.relative_to(repo)}:{i}" for i, line in enumerate(f.read_text().splitlines(), 1)
                          if pattern.search(line)]
    assert found == [], f"unpack archives with yoloseg.utils.archive.extract_archive, not directly: {found}"
    assert pattern.search((repo / "yoloseg" / "utils" / "archive.py").read_text())  # the pattern does match
