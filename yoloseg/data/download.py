"""Fetching a data set archive: progress bar, timeout, resume, optional SHA-256, a warning for plain http.

``download_file(url, dst)`` writes ``dst`` only once the whole file arrived (and matched ``sha256`` when given).
Bytes arrive in ``dst.part``; a broken transfer is retried from where it stopped (HTTP ``Range``) while it makes
progress, and a ``.part`` left by a failed run is resumed by the next one.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

__all__ = ["ChecksumError", "DownloadError", "download_file"]

LOGGER = logging.getLogger("yoloseg")
CHUNK = 1 << 20
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


class DownloadError(ConnectionError):
    """The transfer failed; the message says what was kept and what to do."""


class ChecksumError(ValueError):
    """The downloaded file does not have the expected SHA-256 (it was deleted)."""


def check_sha256(value, what: str) -> str | None:
    """``value`` as a lower-case hex SHA-256, None when not given; anything else is an error naming ``what``."""
    if value is None:
        return None
    if not isinstance(value, str) or not _SHA256.fullmatch(value.strip()):
        raise ValueError(f"{what}: expected 64 hexadecimal digits (a SHA-256), got {value!r}")
    return value.strip().lower()


def _warn_plain_http(url: str, sha256: str | None) -> None:
    if url.lower().startswith("http://"):
        guard = ("download_sha256 is set, so a changed file will be refused" if sha256 else
                 "set download_sha256 in the data YAML to have the file checked")
        LOGGER.warning(f"downloading {url} over plain http://: anyone on the network path can read or replace the "
                       f"archive in transit; prefer https:// ({guard})")


def _bar(total: int | None, initial: int, desc: str, progress: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                file=sys.stderr, dynamic_ncols=True, disable=not progress, leave=True)


def _attempt(url: str, part: Path, timeout: float, progress: bool, desc: str) -> None:
    """One request: resume ``part`` when the server allows it, else start again. Raises on any failure."""
    have = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "yoloseg", **({"Range": f"bytes={have}-"} if have else {})}
    req = urllib.request.Request(url, headers=headers)
    try:
        r = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # the part is not a prefix of what is served now: start again
            part.unlink()
            return _attempt(url, part, timeout, progress, desc)
        raise
    with r:
        length = r.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if r.status == 206:
            m = re.match(r"bytes (\d+)-", r.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != have:
                raise http.client.HTTPException(f"the server resumed at the wrong offset "
                                                f"({r.headers.get('Content-Range')!r} for {have} bytes held)")
            mode = "ab"
        else:
            have, mode = 0, "wb"
        total = have + length if length is not None else None
        with open(part, mode) as f, _bar(total, have, desc, progress) as bar:
            got = have
            while True:
                chunk = r.read(CHUNK)
                if not chunk:
                    break
                f.write(chunk)
                got += len(chunk)
                bar.update(len(chunk))
        if total is not None and got < total:
            raise http.client.IncompleteRead(b"", total - got)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _reason(e: BaseException, timeout: float) -> str:
    if isinstance(e, (socket.timeout, TimeoutError)) or "timed out" in str(e):
        return f"no data for {timeout:g} s (timeout)"
    if isinstance(e, http.client.IncompleteRead):
        return f"the connection closed with {e.expected} bytes still to come"
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        return str(e.reason)
    return f"{type(e).__name__}: {e}"


def download_file(url: str, dst: str | Path, *, sha256: str | None = None, timeout: float = 30.0,
                  retries: int = 3, progress: bool = True, desc: str | None = None) -> Path:
    """Download ``url`` to ``dst`` (bytes go to ``dst.part`` first, resumed when one is there).

    A transfer that breaks after making progress is resumed up to ``retries`` times; one that makes none fails at
    once. A failure raises :class:`DownloadError` saying whether a partial file was kept for the next run. With
    ``sha256`` the finished file is checked; a mismatch deletes it and raises :class:`ChecksumError`. A plain
    ``http://`` URL is fetched with a warning naming the risk.
    """
    dst = Path(dst)
    sha256 = check_sha256(sha256, "sha256")
    _warn_plain_http(url, sha256)
    dst.parent.mkdir(parents=True, exist_ok=True)
    part = dst.with_name(dst.name + ".part")
    tries = 0
    while True:
        before = part.stat().st_size if part.exists() else 0
        try:
            _attempt(url, part, timeout, progress, desc or dst.name)
            break
        except (OSError, http.client.HTTPException, ValueError) as e:
            now = part.stat().st_size if part.exists() else 0
            tries += 1
            permanent = isinstance(e, urllib.error.HTTPError) and e.code < 500
            if now > before and tries <= retries and not permanent:
                LOGGER.warning(f"download of {url} broke after {now} bytes ({_reason(e, timeout)}); resuming")
                time.sleep(min(0.2 * tries, 2.0))
                continue
            if now:
                what = (f"{now} bytes are kept in {part}; run again to resume (the server must support HTTP "
                        f"range requests, else it starts over), or delete that file to start over")
            else:
                what = "nothing was kept; check the URL and the network, then run again"
            raise DownloadError(f"downloading {url} failed ({_reason(e, timeout)}); {what}") from e
    if sha256 is not None:
        got = _sha256(part)
        if got != sha256:
            part.unlink()
            raise ChecksumError(f"the file downloaded from {url} has SHA-256 {got}, expected {sha256}; it was deleted "
                                f"and nothing was unpacked (the file changed at the source or in transit, or the "
                                f"checksum is wrong)")
    os.replace(part, dst)
    return dst
