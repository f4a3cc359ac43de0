"""Fuzzing the readers of user files: configs, IDX, dSprites npz, image files and checkpoints.

Each reader gets random bytes, random shapes and random values (and mutations of real files). It
must either succeed or raise vaezoo's own error for that kind of input -- ConfigError (or
UnknownModelError, a KeyError) for configs, DataError for data, CheckpointError for checkpoints --
never another exception, never hang (a per-example time limit), and never leave a partial file
behind (the folders are listed after each example).

Derandomized and without an example database, so CI runs the same examples every time; the
example counts keep the whole file near 20 s.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import signal
import string
import struct
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import numpy as np
import torch
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from vaezoo.config import SECTIONS, ConfigError, load_config
from vaezoo.data import DataError, VAEDataModule
from vaezoo.data import dsprites as ds
from vaezoo.io import CheckpointError, load_checkpoint, load_run
from vaezoo.registry import UnknownModelError, create_model

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def fuzz(examples: int) -> settings:
    """The fuzz settings with ``examples`` examples."""
    return settings(FUZZ, max_examples=examples)


TIME_LIMIT = 10.0  # seconds one example may take before it counts as a hang


@contextlib.contextmanager
def within(seconds: float = TIME_LIMIT) -> Iterator[None]:
    """Fail (instead of waiting forever) if the block runs longer than ``seconds``."""

    def hang(signum: int, frame: object) -> None:
        raise AssertionError(f"hung: still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def leftovers(folder: Path) -> list[str]:
    """Temporary or partial files under ``folder`` (a cache's lock file is not one)."""
    return sorted(p.name for p in folder.rglob("*") if p.is_file() and p.name.endswith(".tmp"))


def mutate(data: bytes, draw) -> bytes:
    """``data`` with a few bytes flipped, a piece cut out or inserted, or cut short."""
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "truncate"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del data[at : at + draw(st.integers(1, 64))]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=32))
        else:
            data = data[:at]
    return bytes(data)


# --------------------------------------------------------------------------- configs

CONFIG_ERRORS = (ConfigError, UnknownModelError)
KEYS = {name: sorted(cls.__dataclass_fields__) for name, cls in SECTIONS.items()}
MODEL_KEYS = ["name", "latent_dim", "hidden_dims", "in_channels", "image_size", "likelihood", "beta"]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["VanillaVAE", "auto", "cpu", "unit", "skip", "fail", "sum", "tanh", "dsprites"])
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def config_documents(draw) -> object:
    """Mostly our layout with real key names (to get past the first check), sometimes anything."""
    if draw(st.integers(0, 9)) == 0:
        return draw(values)
    document: dict[object, object] = {}
    for section in draw(
        st.lists(st.sampled_from(["model", *SECTIONS, "trian", "model_params", 3]), max_size=4)
    ):
        names = MODEL_KEYS if section == "model" else KEYS.get(section, ["name", "x"])
        keys = st.sampled_from(names) | st.text(max_size=8)
        document[section] = draw(st.dictionaries(keys, values, max_size=4) | values)
    return document


@fuzz(150)
@given(document=config_documents())
def test_config_files_of_random_values(document):
    with tempfile.TemporaryDirectory() as tmp, within():
        path = Path(tmp) / "config.yaml"
        path.write_text(yaml.safe_dump(document, allow_unicode=True))
        try:
            load_config(path)
        except CONFIG_ERRORS:
            pass


yaml_text = st.text(alphabet=string.printable + "äλ\u2028{}[]&*!|>-:#%@`'\"", max_size=200)
deep = st.builds(  # nesting past PyYAML's recursion (it parses one level per Python call)
    lambda depth, kind: kind[0] * depth + kind[1] * depth,
    st.sampled_from([5, 300, 1200]),
    st.sampled_from([("[", "]"), ("{a: ", "}"), ("- ", "")]),
)
aliases = st.integers(1, 9).map(  # "a billion laughs": aliases that expand exponentially
    lambda n: (
        "train:\n  devices:\n  - &a0 [x, x, x, x, x, x, x, x, x]\n"
        + "".join(f"  - &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]\n" for i in range(1, n + 1))
    )
)


@fuzz(150)
@given(text=yaml_text | deep | aliases)
def test_config_files_of_random_text(text):
    with tempfile.TemporaryDirectory() as tmp, within():
        path = Path(tmp) / "config.yaml"
        path.write_text(text)
        try:
            load_config(path)
        except CONFIG_ERRORS:
            pass


override_keys = st.sampled_from(
    [f"{section}.{key}" for section, keys in KEYS.items() for key in keys]
    + [f"model.{k}" for k in MODEL_KEYS]
) | st.text(alphabet=string.ascii_letters + "._-", max_size=16)


@fuzz(150)
@given(
    pairs=st.lists(st.tuples(override_keys, yaml_text | deep | values.map(str)), max_size=4),
    equals=st.booleans(),
)
def test_overrides_of_random_keys_and_values(pairs, equals):
    args: list[str] = []
    for key, value in pairs:
        args.extend([f"--{key}={value}"] if equals else [f"--{key}", value])
    with within():
        try:
            load_config(None, args)
        except CONFIG_ERRORS:
            pass


# --------------------------------------------------------------------------- IDX files

IDX_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    return (
        bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    )


def valid_idx(n_train: int, n_test: int) -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    return {
        IDX_NAMES[0]: idx_bytes(rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)),
        IDX_NAMES[1]: idx_bytes(rng.integers(0, 10, n_train, dtype=np.uint8)),
        IDX_NAMES[2]: idx_bytes(rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)),
        IDX_NAMES[3]: idx_bytes(rng.integers(0, 10, n_test, dtype=np.uint8)),
    }


@st.composite
def idx_folders(draw) -> dict[str, bytes]:
    """The four files: valid, mutated, random bytes after a real magic, or a random header."""
    files = valid_idx(draw(st.integers(0, 6)), draw(st.integers(0, 4)))
    for name in draw(st.lists(st.sampled_from(IDX_NAMES), min_size=1, max_size=4, unique=True)):
        kind = draw(st.sampled_from(["mutate", "random", "header", "shape"]))
        if kind == "mutate":
            files[name] = mutate(files[name], draw)
        elif kind == "random":
            files[name] = files[name][:4] + draw(st.binary(max_size=64))
        elif kind == "header":
            files[name] = draw(st.binary(min_size=0, max_size=16))
        else:  # a well-formed header announcing any shape, over too few or too many bytes
            ndim = 3 if "images" in name else 1
            shape = draw(st.lists(st.integers(0, 2**32 - 1), min_size=ndim, max_size=ndim))
            files[name] = (
                bytes([0, 0, 8, ndim]) + struct.pack(f">{ndim}I", *shape) + draw(st.binary(max_size=64))
            )
    return files


def with_header(shape: tuple[int, ...], values: bytes = b"") -> dict[str, bytes]:
    """Valid files, but the training images' header announces ``shape``."""
    header = bytes([0, 0, 8, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)
    return {**valid_idx(4, 2), IDX_NAMES[0]: header + values}


@fuzz(300)
@given(files=idx_folders(), gz=st.booleans())
@example(files=with_header((2**31, 2**31, 4)), gz=False)  # a size that wraps to 0 in int64
@example(files=with_header((4, 0, 7)), gz=False)  # images of no pixels
@example(files=with_header((4, 3, 5), bytes(60)), gz=True)  # not square
def test_idx_files(files, gz):
    with tempfile.TemporaryDirectory() as tmp, within():
        folder = Path(tmp)
        for name, data in files.items():
            (folder / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)
        try:
            module = VAEDataModule(data_config("mnist", folder), batch_size=4)
            module.setup()
            next(iter(module.train_dataloader()))
        except DataError:
            pass


def data_config(name: str, path: Path, **settings_: object):
    from vaezoo.config import DataConfig

    return DataConfig(name=name, path=str(path), image_size=28, subset=None, **settings_)


# --------------------------------------------------------------------------- dSprites npz

SMALL_GRID = 64  # NUM_IMAGES while fuzzing: a 64-image "official" file


def official_arrays(n: int = SMALL_GRID) -> dict[str, np.ndarray]:
    grid = ds.index_to_classes(np.arange(n))
    return {
        "imgs": (np.random.default_rng(0).random((n, 64, 64)) < 0.3).astype(np.uint8),
        "latents_values": np.random.default_rng(1).random((n, 6)),
        "latents_classes": np.concatenate([np.zeros((n, 1), np.int64), grid], axis=1),
    }


def npz_bytes(arrays: dict[str, np.ndarray], compressed: bool) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


dtypes = st.sampled_from([np.uint8, np.int8, np.int64, np.float32, np.float64, np.bool_, ">i4", "<U3"])


@st.composite
def npz_files(draw) -> bytes:
    kind = draw(st.sampled_from(["arrays", "mutate", "random", "members"]))
    if kind == "arrays":  # the right keys (or not) with any shapes and dtypes
        arrays = official_arrays()
        for key in draw(st.lists(st.sampled_from([*arrays, "extra"]), max_size=3, unique=True)):
            if draw(st.booleans()):
                arrays.pop(key, None)
                continue
            shape = tuple(draw(st.lists(st.integers(0, SMALL_GRID + 1), max_size=3)))
            arrays[key] = np.zeros(shape, dtype=draw(dtypes))
        return npz_bytes(arrays, draw(st.booleans()))
    if kind == "mutate":
        return mutate(npz_bytes(official_arrays(), draw(st.booleans())), draw)
    if kind == "random":
        return b"PK\x03\x04" + draw(st.binary(max_size=200))
    buffer = io.BytesIO()  # a zip whose members are not .npy files
    with zipfile.ZipFile(buffer, "w") as archive:
        for key in ("imgs", "latents_values", "latents_classes"):
            archive.writestr(f"{key}.npy", draw(st.binary(max_size=80)))
    return buffer.getvalue()


@fuzz(200)
@given(data=npz_files())
def test_dsprites_npz(data):
    with tempfile.TemporaryDirectory() as tmp, within(), mock.patch.object(ds, "NUM_IMAGES", SMALL_GRID):
        npz = Path(tmp) / "dsprites.npz"
        npz.write_bytes(data)
        cache = Path(tmp) / "cache"
        config = data_config("dsprites", npz, cache_dir=str(cache), val_fraction=0.25)
        try:
            module = VAEDataModule(config, batch_size=4)
            module.prepare_data()
            module.setup()
            next(iter(module.train_dataloader()))
        except DataError:
            pass
        assert leftovers(Path(tmp)) == []


# --------------------------------------------------------------------------- image files

HEADERS = {
    ".png": b"\x89PNG\r\n\x1a\n",
    ".jpg": b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
    ".bmp": b"BM",
    ".webp": b"RIFF\x00\x00\x00\x00WEBPVP8 ",
}


def real_image(suffix: str) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format={".jpg": "JPEG"}.get(suffix, suffix[1:].upper()))
    return buffer.getvalue()


@st.composite
def image_files(draw) -> tuple[str, bytes]:
    suffix = draw(st.sampled_from(sorted(HEADERS)))
    if draw(st.booleans()):
        return suffix, HEADERS[suffix] + draw(st.binary(max_size=300))
    return suffix, mutate(real_image(suffix), draw)


@fuzz(300)
@given(image=image_files(), cached=st.booleans(), bad_files=st.sampled_from(["fail", "skip"]))
def test_image_files(image, cached, bad_files):
    suffix, data = image
    with tempfile.TemporaryDirectory() as tmp, within(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the cache folder's, and data.bad_files: skip's: not the point here
        root = Path(tmp) / "images"
        root.mkdir()
        (root / f"fuzzed{suffix}").write_bytes(data)
        (root / "good.png").write_bytes(real_image(".png"))
        cache = Path(tmp) / "cache"
        if not cached:  # a cache folder below a file: decoded on the fly, files met mid-epoch
            (Path(tmp) / "file").write_text("")
            cache = Path(tmp) / "file" / "cache"
        config = data_config(
            "image_folder", root, cache_dir=str(cache), val_fraction=0.0, bad_files=bad_files
        )
        try:
            module = VAEDataModule(config, batch_size=2)
            module.prepare_data()
            module.setup()
            images, _ = next(iter(module.train_dataloader()))
            assert images.shape == (2, 3, 28, 28)
        except DataError as err:
            assert bad_files == "fail" or "crop size" in str(err), err  # skip leaves bad files out
        assert leftovers(Path(tmp)) == []


# --------------------------------------------------------------------------- checkpoints


def real_checkpoint() -> bytes:
    model = create_model("VanillaVAE", in_channels=1, latent_dim=2, hidden_dims=[4, 8], image_size=16)
    meta = {"model_name": "VanillaVAE", "model_config": model.config, "config": {}, "version": "0.1.0"}
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save({"vaezoo": meta, "state_dict": state, "global_step": 3}, buffer)
    return buffer.getvalue()


REAL_CHECKPOINT = real_checkpoint()


@st.composite
def checkpoint_files(draw) -> bytes:
    kind = draw(st.sampled_from(["mutate", "mutate", "random", "zip"]))
    if kind == "mutate":
        return mutate(REAL_CHECKPOINT, draw)
    if kind == "random":
        return draw(st.binary(max_size=300))
    return b"PK\x03\x04" + draw(st.binary(max_size=300))


@fuzz(300)
@given(data=checkpoint_files())
def test_checkpoint_bytes(data):
    with tempfile.TemporaryDirectory() as tmp, within():
        path = Path(tmp) / "last.ckpt"
        path.write_bytes(data)
        for load in (load_checkpoint, load_run):
            try:
                load(path)
            except CheckpointError:
                pass
        assert sorted(p.name for p in Path(tmp).iterdir()) == ["last.ckpt"]


plain = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


@fuzz(100)
@given(
    field=st.sampled_from(
        ["vaezoo", "model_name", "model_config", "config", "version", "state_dict", "global_step", "tensor"]
    ),
    value=plain,
)
def test_checkpoint_contents(field, value):
    """A well-formed checkpoint whose plain-data fields hold anything (another tool's, an older
    vaezoo's, or hand-edited): the model loads or a CheckpointError says why."""
    checkpoint = torch.load(io.BytesIO(REAL_CHECKPOINT), weights_only=True)
    if field in ("vaezoo", "state_dict", "global_step"):
        checkpoint[field] = value
    elif field == "tensor":  # a weight of another shape or type
        key = next(iter(checkpoint["state_dict"]))
        checkpoint["state_dict"][key] = value if not isinstance(value, int) else torch.zeros(abs(value) % 5)
    else:
        checkpoint["vaezoo"][field] = value
    with tempfile.TemporaryDirectory() as tmp, within():
        path = Path(tmp) / "last.ckpt"
        torch.save(checkpoint, path)
        try:
            load_run(path)
        except CheckpointError:
            pass
