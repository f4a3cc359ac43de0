"""Decode once: the uint8 image cache of file datasets (CelebA, image folders), read by position.

A cache is a ``.npy`` of (N, C, H, W) uint8 pixels after channel conversion, centre crop and resize
(``ImagePipeline.decode``), beside a small JSON sidecar that holds its key and the files found
unreadable while it was built (``data.bad_files: skip``: their rows are zeros and are left out).
The key is a sha256 over the ordered file paths, each file's size and ``mtime_ns``, the transform
and ``FORMAT_VERSION``; the file name carries a digest of the paths and the transform, so a change
of any file's size or time rebuilds the cache in place, while another transform or file list gets a
cache of its own.

Writing is atomic: the sidecar and the old pixels are removed before a build, the pixels go to a
temporary file that is renamed into place once complete, and the sidecar is written (atomically)
last, holding the pixels' byte count and CRC-32. A cache is trusted only if its sidecar's key
matches, its header has the expected shape and its pixels have the recorded size and checksum, so a
crash mid-build, a torn copy or a flipped bit leaves nothing that is trusted later: it is rebuilt.
Builds hold a lock file, under which any leftover temporary file is a dead build's and is removed.
A disk that fills mid-build raises :class:`vaezoo.fileio.DiskFullError` (nothing partial is left).

Rows are read with positional reads (``os.preadv``), never through a memory map: the page cache
serves them, and a process's RSS does not grow with the share of the file it has touched.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import warnings
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import numpy as np
from tqdm import tqdm

from vaezoo.config import DataConfig
from vaezoo.data.common import (
    SKIP_HINT,
    DecodedImages,
    ImageSource,
    SkipRecord,
    cache_dir,
    check_image_header,
    decode_file,
)
from vaezoo.data.errors import BadImageFile, DataError
from vaezoo.data.transforms import ImagePipeline
from vaezoo.fileio import DiskFullError, atomic_path, crc32_of_file

# Bump on any change of the layout or of ImagePipeline.decode: invalidates caches (2: the sidecar
# holds the pixels' CRC-32 and the files found unreadable; 16-bit images are scaled to 8 bits, where
# they were clipped to white).
FORMAT_VERSION = 2
CHUNK = 256  # images decoded (in threads) per write
SHARED = 0o644  # caches may serve other users (temporary files start private)
NOTHING_KEPT = (
    "no partial cache is left (a later run builds it again); free some space, or point data.cache_dir "
    "or $VAEZOO_CACHE at a disk with room"
)


# --------------------------------------------------------------------------- reading rows


class RowReader:
    """Rows of a C-ordered ``.npy`` file read by position (``os.preadv``); re-opens after pickling."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.shape, self.dtype, self.offset = read_npy_header(self.path)
        self.row_shape = self.shape[1:]
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        self._fd: int | None = None

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None}  # a worker opens its own descriptor

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)

    def fd(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        return self._fd

    def read(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), *row_shape) array of the given rows, in the order given."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise DataError(f"{self.path}: row {rows.min()}..{rows.max()} outside 0..{len(self) - 1}")
        out = np.empty((len(rows), *self.row_shape), dtype=self.dtype)
        fd, size = self.fd(), self.row_bytes
        for i in np.argsort(rows, kind="stable"):  # ascending offsets: kinder to a disk
            if os.preadv(fd, [out[i]], self.offset + int(rows[i]) * size) != size:
                raise DataError(
                    f"{self.path}: truncated at row {rows[i]}; expected {len(self)} rows (the file was "
                    "cut short after it was opened; an image cache is rebuilt at the next start)"
                )
        return out


def unreadable_error(path: Path, reason: str) -> BadImageFile:
    """The BadImageFile of a file the cache's build found unreadable."""
    return BadImageFile(f"{path}: {reason}; {SKIP_HINT}", path=path, reason=reason)


class CachedImages(RowReader):
    """The image cache as an ImageSource: rows of decoded pixels, and which files were unreadable
    when it was built (their rows are zeros; ``data.bad_files: skip`` left them out)."""

    def __init__(self, path: Path, files: Sequence[Path], bad: dict[int, str] | None = None) -> None:
        super().__init__(path)
        self.files = list(files)
        self.skips = SkipRecord(len(self.files))
        self.unreadable = dict(bad or {})  # row -> why, from the sidecar
        for row in sorted(self.unreadable):
            self.skips.mark(row, self.error(row))

    def error(self, row: int) -> BadImageFile:
        return unreadable_error(self.files[row], self.unreadable[row])

    def read(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        for row in rows.tolist():
            if row in self.unreadable:
                raise self.error(row)
        return super().read(rows)

    def read_skipping(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = np.asarray(rows, dtype=np.int64)
        ok = np.array([not self.skips.is_bad(int(r)) for r in rows], dtype=bool)
        return super().read(rows), ok


def parse_npy_header(stream: IO[bytes], where: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of the ``.npy`` header at the stream's position; a format other than 1.0 / 2.0,
    a Fortran-ordered or an object array raises a DataError naming ``where``."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    try:
        version = np.lib.format.read_magic(stream)
        if version not in readers:
            raise DataError(f"{where} uses .npy format {version}; expected 1.0 or 2.0")
        shape, fortran, dtype = readers[version](stream)
    except DataError:
        raise
    except Exception as err:  # a damaged header: numpy's parser raises ValueError, SyntaxError, ...
        raise DataError(f"{where}: not a readable .npy file ({type(err).__name__}: {err})") from None
    if fortran or dtype.hasobject:
        raise DataError(f"{where} must be a C-ordered numeric array, got {dtype} {shape} fortran={fortran}")
    return shape, dtype


def read_npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, data offset) of a ``.npy`` file; a non-npy, empty-shaped or Fortran array
    raises a DataError."""
    try:
        with open(path, "rb") as f:
            shape, dtype = parse_npy_header(f, str(path))
            offset = f.tell()
    except DataError:
        raise
    except (OSError, ValueError) as err:  # not a .npy file at all
        raise DataError(f"{path}: not a readable .npy file ({err})") from None
    if not shape:
        raise DataError(f"{path}: expected an array of rows, got a scalar {dtype}")
    return shape, dtype, offset


# --------------------------------------------------------------------------- keys and validity


def file_stats(files: Sequence[Path]) -> list[tuple[str, int, int]]:
    """(path, size, mtime_ns) of every file; a missing file raises a DataError naming it."""
    stats = []
    for path in files:
        try:
            stat = os.stat(path)
        except OSError as err:
            raise DataError(f"{path}: cannot read the file's size and time ({err})") from None
        stats.append((str(path), stat.st_size, stat.st_mtime_ns))
    return stats


def digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def cache_paths(
    directory: Path, name: str, files: Sequence[Path], pipeline: ImagePipeline
) -> tuple[Path, Path]:
    """(pixels ``.npy``, sidecar ``.json``): named by the file list and the transform."""
    stem = f"{name}-{digest([FORMAT_VERSION, pipeline.key(), [str(p) for p in files]])[:16]}-u8"
    return directory / f"{stem}.npy", directory / f"{stem}.json"


def full_key(files: Sequence[Path], pipeline: ImagePipeline) -> str:
    """The cache's key: files with sizes and times, the transform and the format version."""
    return digest({"version": FORMAT_VERSION, "transform": pipeline.key(), "files": file_stats(files)})


def expected_shape(count: int, pipeline: ImagePipeline) -> tuple[int, int, int, int]:
    return (count, pipeline.channels, pipeline.image_size, pipeline.image_size)


def damage(npy: Path, meta: dict, shape: tuple[int, ...]) -> str | None:
    """Why the pixels file does not match its sidecar ``meta`` (header, size, CRC-32), or None."""
    try:
        header_shape, dtype, offset = read_npy_header(npy)
        size = npy.stat().st_size
        if header_shape != shape or dtype != np.uint8:
            return f"its header says {dtype} {header_shape}, expected uint8 {shape}"
        if size - offset != meta.get("bytes") or meta.get("bytes") != int(np.prod(shape)):
            return f"it holds {size - offset} bytes of pixels, its sidecar says {meta.get('bytes')}"
        if crc32_of_file(npy, offset) != meta.get("crc32"):
            return "its pixels fail their CRC-32 checksum"
    except (OSError, ValueError) as err:  # missing or unreadable (DataError is a ValueError)
        return str(err)
    return None


def read_sidecar(npy: Path, sidecar: Path, key: str, shape: tuple[int, ...]) -> dict | None:
    """The sidecar's contents if it holds ``key`` and the pixels file matches it (``damage``);
    None otherwise (missing, stale, torn or damaged: the cache is rebuilt)."""
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError):  # missing or unreadable
        return None
    if not isinstance(meta, dict) or meta.get("key") != key or damage(npy, meta, shape) is not None:
        return None
    return meta


def is_valid(npy: Path, sidecar: Path, key: str, shape: tuple[int, ...]) -> bool:
    """Whether the sidecar holds ``key`` and the pixels file has ``shape`` uint8, its recorded size
    and checksum."""
    return read_sidecar(npy, sidecar, key, shape) is not None


def unreadable_rows(meta: dict) -> dict[int, str]:
    """{row: why} of the files a cache's build found unreadable."""
    return {int(row): str(reason) for row, reason in meta.get("unreadable", [])}


# --------------------------------------------------------------------------- building


@contextmanager
def build_lock(npy: Path) -> Iterator[None]:
    """An exclusive lock beside the cache (released if the holder dies)."""
    with open(npy.with_suffix(".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove_leftovers(npy: Path) -> None:
    """Temporary files of builds that died (only called under the build lock)."""
    for name in (npy.name, npy.with_suffix(".json").name):
        for tmp in npy.parent.glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)


def decode_chunks(
    files: Sequence[Path], pipeline: ImagePipeline, unreadable: dict[int, str] | None = None
) -> Iterator[np.ndarray]:
    """(<= CHUNK, C, H, W) uint8 blocks of the files in order, decoded in threads (PIL frees the GIL).

    An unreadable file raises its BadImageFile, unless ``unreadable`` is given (``data.bad_files:
    skip``): then its row is zeros and ``unreadable[row]`` says why.
    """
    shape = (pipeline.channels, pipeline.image_size, pipeline.image_size)

    def decode(row: int) -> np.ndarray:
        try:
            return decode_file(files[row], pipeline)
        except BadImageFile as err:
            if unreadable is None:
                raise
            unreadable[row] = err.reason or str(err)
            return np.zeros(shape, dtype=np.uint8)

    threads = max(1, min(8, len(os.sched_getaffinity(0))))
    with ThreadPoolExecutor(threads) as pool:
        for start in range(0, len(files), CHUNK):
            rows = range(start, min(start + CHUNK, len(files)))
            yield np.stack(list(pool.map(decode, rows)))


def write_pixels(
    npy: Path,
    files: Sequence[Path],
    pipeline: ImagePipeline,
    label: str,
    unreadable: dict[int, str] | None = None,
) -> int:
    """Decode every file into ``npy`` (atomically: a temporary file renamed when complete); returns
    the CRC-32 of the pixel bytes. ``unreadable`` as in ``decode_chunks``."""
    shape = expected_shape(len(files), pipeline)
    header = {
        "descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
        "fortran_order": False,
        "shape": shape,
    }
    progress = tqdm(total=len(files), desc=f"caching {label}", unit="img", disable=None, leave=False)
    crc = 0
    with atomic_path(npy, kept=NOTHING_KEPT) as tmp, open(tmp, "wb") as out, progress:
        os.chmod(tmp, SHARED)
        np.lib.format.write_array_header_2_0(out, header)
        for block in decode_chunks(files, pipeline, unreadable):  # written sequentially, never memory-mapped
            data = np.ascontiguousarray(block).tobytes()
            out.write(data)
            crc = zlib.crc32(data, crc)
            progress.update(len(block))
    return crc


def build_cache(
    npy: Path, sidecar: Path, files: Sequence[Path], pipeline: ImagePipeline, label: str, skip: bool = False
) -> dict[int, str]:
    """(Re)build the cache unless another process did so while we waited for the lock; returns
    the unreadable rows (only ever non-empty with ``skip``: without, the first one raises)."""
    with build_lock(npy):
        key = full_key(files, pipeline)
        meta = read_sidecar(npy, sidecar, key, expected_shape(len(files), pipeline))
        if meta is not None:
            return unreadable_rows(meta)
        remove_leftovers(npy)
        sidecar.unlink(missing_ok=True)  # the old key must not vouch for a half-written file
        npy.unlink(missing_ok=True)  # nor are stale pixels left to take space
        unreadable: dict[int, str] = {}
        crc = write_pixels(npy, files, pipeline, label, unreadable if skip else None)
        write_sidecar(sidecar, key, len(files), pipeline, crc, unreadable)
        return unreadable


def write_sidecar(
    sidecar: Path,
    key: str,
    count: int,
    pipeline: ImagePipeline,
    crc: int,
    unreadable: dict[int, str] | None = None,
) -> None:
    """The validity marker, written (atomically) once the pixels are complete and in place."""
    meta = {
        "key": key,
        "format_version": FORMAT_VERSION,
        "count": count,
        "transform": pipeline.key(),
        "bytes": int(np.prod(expected_shape(count, pipeline))),
        "crc32": crc,
        "unreadable": sorted((unreadable or {}).items()),  # [row, why] of files left out
    }
    with atomic_path(sidecar, kept=NOTHING_KEPT) as tmp:
        tmp.write_text(json.dumps(meta))
        os.chmod(tmp, SHARED)


def open_image_cache(
    directory: Path, name: str, files: Sequence[Path], pipeline: ImagePipeline, bad_files: str = "fail"
) -> CachedImages | None:
    """The cache of ``files`` under ``pipeline``, built (or rebuilt if stale) first if needed.

    None if ``directory`` cannot be written (the caller then decodes on the fly); a warning names it.
    With ``bad_files`` "fail" an unreadable file raises its BadImageFile (also one a build under
    "skip" recorded); with "skip" unreadable files are left out, the first warned about.
    """
    npy, sidecar = cache_paths(directory, name, files, pipeline)
    meta = read_sidecar(npy, sidecar, full_key(files, pipeline), expected_shape(len(files), pipeline))
    if meta is not None:
        unreadable = unreadable_rows(meta)
    else:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            label = f"{name} ({len(files)} images) into {npy}"
            unreadable = build_cache(npy, sidecar, files, pipeline, label, skip=bad_files == "skip")
        except DiskFullError:
            raise  # says so, and that nothing partial is left: decoding on the fly would hide it
        except OSError as err:
            warnings.warn(
                f"{directory}: cannot write the image cache there ({type(err).__name__}: {err}); "
                "decoding every image on the fly instead (slow). Set data.cache_dir or $VAEZOO_CACHE "
                "to a writable folder",
                stacklevel=2,
            )
            return None
    if unreadable and bad_files != "skip":
        first = min(unreadable)
        raise unreadable_error(files[first], unreadable[first])
    return CachedImages(npy, files, unreadable)


def image_source(config: DataConfig, files: Sequence[Path], pipeline: ImagePipeline) -> ImageSource:
    """The cached pixels of ``files`` (built first if missing or stale) in ``cache_dir(config)``;
    if that folder cannot be written, the files decoded on the fly, every header checked now.

    ``data.bad_files`` "fail": the first unreadable file raises here (or when it is read, if it
    turns bad later); "skip": unreadable files are marked in the source's ``skips`` and left out.
    """
    cached = open_image_cache(cache_dir(config), config.name, files, pipeline, config.bad_files)
    if cached is not None:
        return cached
    decoded = DecodedImages(files, pipeline)
    for row, path in enumerate(files):
        try:
            check_image_header(path)
        except BadImageFile as err:
            if config.bad_files != "skip":
                raise
            decoded.skips.mark(row, err)
    return decoded
