"""Decode once: the uint8 image cache of file datasets (CelebA, image folders), read by position.

A cache is a ``.npy`` of (N, C, H, W) uint8 pixels after channel conversion, centre crop and resize
(``ImagePipeline.decode``), beside a small JSON sidecar that holds its key. The key is a sha256 over
the ordered file paths, each file's size and ``mtime_ns``, the transform and ``FORMAT_VERSION``;
the file name carries a digest of the paths and the transform, so a change of any file's size or
time rebuilds the cache in place, while another transform or file list gets a cache of its own.

Writing is atomic: the sidecar is removed before a build, the pixels go to a temporary file that is
renamed into place once complete, and the sidecar is written (atomically) last. A cache is trusted
only if its sidecar's key matches and its header has the expected shape, so a crash mid-build
leaves nothing that is trusted later; builds hold a lock file, under which any leftover temporary
file is a dead build's and is removed.

Rows are read with positional reads (``os.preadv``), never through a memory map: the page cache
serves them, and a process's RSS does not grow with the share of the file it has touched.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import numpy as np
from tqdm import tqdm

from vaezoo.config import DataConfig
from vaezoo.data.common import DecodedImages, ImageSource, cache_dir, check_image_header, decode_file
from vaezoo.data.errors import DataError
from vaezoo.data.transforms import ImagePipeline
from vaezoo.fileio import atomic_path

FORMAT_VERSION = 1  # bump on any change of the layout or of ImagePipeline.decode: invalidates caches
CHUNK = 256  # images decoded (in threads) per write
SHARED = 0o644  # caches may serve other users (temporary files start private)


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
                raise DataError(f"{self.path}: truncated at row {rows[i]}; expected {len(self)} rows")
        return out


def parse_npy_header(stream: IO[bytes], where: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of the ``.npy`` header at the stream's position; a format other than 1.0 / 2.0,
    a Fortran-ordered or an object array raises a DataError naming ``where``."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    version = np.lib.format.read_magic(stream)
    if version not in readers:
        raise DataError(f"{where} uses .npy format {version}; expected 1.0 or 2.0")
    shape, fortran, dtype = readers[version](stream)
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


def is_valid(npy: Path, sidecar: Path, key: str, shape: tuple[int, ...]) -> bool:
    """Whether the sidecar holds ``key`` and the pixels file has ``shape`` uint8."""
    try:
        meta = json.loads(sidecar.read_text())
        header_shape, dtype, _ = read_npy_header(npy)
    except (OSError, ValueError):  # missing or unreadable (DataError is a ValueError)
        return False
    return meta.get("key") == key and header_shape == shape and dtype == np.uint8


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


def decode_chunks(files: Sequence[Path], pipeline: ImagePipeline) -> Iterator[np.ndarray]:
    """(<= CHUNK, C, H, W) uint8 blocks of the files in order, decoded in threads (PIL frees the GIL)."""
    threads = max(1, min(8, len(os.sched_getaffinity(0))))
    with ThreadPoolExecutor(threads) as pool:
        for start in range(0, len(files), CHUNK):
            chunk = files[start : start + CHUNK]
            yield np.stack(list(pool.map(lambda p: decode_file(p, pipeline), chunk)))


def write_pixels(npy: Path, files: Sequence[Path], pipeline: ImagePipeline, label: str) -> None:
    """Decode every file into ``npy`` (atomically: a temporary file renamed when complete)."""
    shape = expected_shape(len(files), pipeline)
    header = {
        "descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)),
        "fortran_order": False,
        "shape": shape,
    }
    progress = tqdm(total=len(files), desc=f"caching {label}", unit="img", disable=None, leave=False)
    with atomic_path(npy) as tmp, open(tmp, "wb") as out, progress:
        os.chmod(tmp, SHARED)
        np.lib.format.write_array_header_2_0(out, header)
        for block in decode_chunks(files, pipeline):  # written sequentially, never memory-mapped
            out.write(np.ascontiguousarray(block).tobytes())
            progress.update(len(block))


def build_cache(npy: Path, sidecar: Path, files: Sequence[Path], pipeline: ImagePipeline, label: str) -> None:
    """(Re)build the cache unless another process did so while we waited for the lock."""
    with build_lock(npy):
        key = full_key(files, pipeline)
        if is_valid(npy, sidecar, key, expected_shape(len(files), pipeline)):
            return
        remove_leftovers(npy)
        sidecar.unlink(missing_ok=True)  # the old key must not vouch for a half-written file
        write_pixels(npy, files, pipeline, label)
        write_sidecar(sidecar, key, len(files), pipeline)


def write_sidecar(sidecar: Path, key: str, count: int, pipeline: ImagePipeline) -> None:
    """The validity marker, written (atomically) once the pixels are complete and in place."""
    meta = {"key": key, "format_version": FORMAT_VERSION, "count": count, "transform": pipeline.key()}
    with atomic_path(sidecar) as tmp:
        tmp.write_text(json.dumps(meta))
        os.chmod(tmp, SHARED)


def open_image_cache(
    directory: Path, name: str, files: Sequence[Path], pipeline: ImagePipeline
) -> RowReader | None:
    """The cache of ``files`` under ``pipeline``, built (or rebuilt if stale) first if needed.

    None if ``directory`` cannot be written (the caller then decodes on the fly); a warning names it.
    """
    npy, sidecar = cache_paths(directory, name, files, pipeline)
    if not is_valid(npy, sidecar, full_key(files, pipeline), expected_shape(len(files), pipeline)):
        try:
            directory.mkdir(parents=True, exist_ok=True)
            build_cache(npy, sidecar, files, pipeline, f"{name} ({len(files)} images) into {npy}")
        except OSError as err:
            warnings.warn(
                f"{directory}: cannot write the image cache there ({type(err).__name__}: {err}); "
                "decoding every image on the fly instead (slow). Set data.cache_dir or $VAEZOO_CACHE "
                "to a writable folder",
                stacklevel=2,
            )
            return None
    return RowReader(npy)


def image_source(config: DataConfig, files: Sequence[Path], pipeline: ImagePipeline) -> ImageSource:
    """The cached pixels of ``files`` (built first if missing or stale) in ``cache_dir(config)``;
    if that folder cannot be written, the files decoded on the fly, every header checked now."""
    cached = open_image_cache(cache_dir(config), config.name, files, pipeline)
    if cached is not None:
        return cached
    for path in files:
        check_image_header(path)
    return DecodedImages(files, pipeline)
