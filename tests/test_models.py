"""datafree.models: the zoo, file factories, and safe weight loading (plus the verified ../shared teachers)."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from datafree.data import load_npz, normalize
from datafree.errors import DatafreeError
from datafree.evaluate import evaluate
from datafree.io import save_safetensors
from datafree.models import (
    KNOWN_CHECKPOINTS,
    MODELS,
    ModelMeta,
    create_model,
    list_models,
    load_weights,
    model_meta,
    read_state_dict,
    sha256_file,
)
from tests.tiny import trained_tiny_teacher

# ---------------------------------------------------------------------------------------------------
# zoo
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(MODELS))
def test_zoo_entry_builds_and_runs(name):
    torch.manual_seed(0)
    spec = MODELS[name]
    model = create_model(name)
    assert isinstance(model, nn.Module)
    meta = model.datafree_meta
    assert meta.name == name
    assert tuple(meta.input_shape) == tuple(spec.input_shape) and len(meta.input_shape) == 3
    assert meta.num_classes == spec.num_classes > 1
    c = meta.input_shape[0]
    assert meta.mean is not None and meta.std is not None
    assert len(meta.mean) == c and len(meta.std) == c
    assert all(0.0 < m < 1.0 for m in meta.mean) and all(s > 0.0 for s in meta.std)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, *meta.input_shape))
    assert out.shape == (2, meta.num_classes)
    assert torch.isfinite(out).all()


def test_list_models_matches_zoo():
    assert list_models() == sorted(MODELS)


@pytest.mark.parametrize("name", ["resnet20", "lenet5_half", "wrn16_1"])
def test_zoo_num_classes_override(name):
    model = create_model(name, num_classes=7)
    assert model.datafree_meta.num_classes == 7
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, *model.datafree_meta.input_shape)).shape == (2, 7)


@pytest.mark.parametrize(("name", "count"), [
    ("resnet20", 269_722), ("resnet32", 464_154), ("resnet44", 658_586), ("resnet56", 853_018),
    ("cifar100_resnet56", 861_620),
])
def test_cifar_resnet_parameter_counts(name, count):
    model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == count


def test_create_model_unknown_lists_choices():
    with pytest.raises(DatafreeError) as ei:
        create_model("nonexistent")
    msg = str(ei.value)
    assert "nonexistent" in msg
    for name in MODELS:
        assert name in msg
    assert "file.py:factory" in msg


FACTORY_SRC = '''
from torch import nn

def tiny(num_classes=3):
    return nn.Sequential(nn.Flatten(), nn.Linear(4, num_classes))

def not_a_module():
    return 42
'''


def test_create_model_from_file(tmp_path):
    f = tmp_path / "my_models.py"
    f.write_text(FACTORY_SRC)
    model = create_model(f"{f}:tiny")
    assert isinstance(model, nn.Module)
    assert model(torch.randn(2, 2, 2)).shape == (2, 3)
    assert create_model(f"{f}:tiny", num_classes=5)(torch.randn(1, 4)).shape == (1, 5)
    # not from the zoo: the caller must describe the input
    with pytest.raises(DatafreeError, match="input_shape"):
        model_meta(model)
    meta = model_meta(model, input_shape=(1, 2, 2), num_classes=3)
    assert meta.input_shape == (1, 2, 2) and meta.num_classes == 3 and meta.name == "custom"


def test_create_model_from_file_errors(tmp_path):
    f = tmp_path / "my_models.py"
    f.write_text(FACTORY_SRC)
    with pytest.raises(DatafreeError) as ei:
        create_model(f"{f}:does_not_exist")
    assert "does_not_exist" in str(ei.value)
    with pytest.raises(DatafreeError, match="not a torch.nn.Module"):
        create_model(f"{f}:not_a_module")
    with pytest.raises(DatafreeError, match="not found"):
        create_model(f"{tmp_path / 'missing.py'}:tiny")


def test_model_meta_merges_zoo_and_overrides():
    model = create_model("lenet5")
    meta = model_meta(model)
    assert meta.input_shape == (1, 28, 28) and meta.num_classes == 10 and meta.name == "lenet5"
    meta = model_meta(model, mean=[0.5], std=[0.5])
    assert meta.mean == (0.5,) and meta.std == (0.5,) and meta.input_shape == (1, 28, 28)


# ---------------------------------------------------------------------------------------------------
# weights
# ---------------------------------------------------------------------------------------------------


def _trained_like(name: str = "resnet20", seed: int = 1) -> nn.Module:
    """A model whose every tensor (BN buffers included) differs from a fresh model's."""
    torch.manual_seed(seed)
    model = create_model(name)
    with torch.no_grad():
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                v.add_(torch.randn_like(v) * 0.1)
                if k.endswith("running_var"):
                    v.abs_().add_(0.1)
            else:
                v.fill_(seed + 41)  # num_batches_tracked
    return model


def _assert_same_state(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_load_weights_torch_save(tmp_path):
    src = _trained_like()
    path = tmp_path / "w.pt"
    torch.save(src.state_dict(), path)
    dst = create_model("resnet20")
    assert not torch.equal(dst.state_dict()["conv1.weight"], src.state_dict()["conv1.weight"])
    assert load_weights(dst, path) is dst
    _assert_same_state(src, dst)


def test_load_weights_wrapped_and_prefixed(tmp_path):
    src = _trained_like(seed=2)
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in src.state_dict().items()}, "epoch": 3}, path)
    dst = load_weights(create_model("resnet20"), path)
    _assert_same_state(src, dst)


def test_load_weights_safetensors_without_scalars(tmp_path):
    # the 0-d num_batches_tracked buffers are left out; load_weights does not require them
    src = _trained_like(seed=3)
    sd = {k: v for k, v in src.state_dict().items() if v.dim() > 0}
    path = tmp_path / "w.safetensors"
    save_safetensors(sd, path)
    dst = load_weights(create_model("resnet20"), path)
    got = dst.state_dict()
    for k, v in sd.items():
        assert torch.equal(got[k], v), k


def test_load_weights_safetensors_full_state_dict(tmp_path):
    src = _trained_like(seed=4)
    path = tmp_path / "w.safetensors"
    save_safetensors(src.state_dict(), path)
    dst = load_weights(create_model("resnet20"), path)
    _assert_same_state(src, dst)


def test_load_weights_wrong_shape_names_key_and_shapes(tmp_path):
    sd = create_model("resnet20").state_dict()
    sd["layer2.1.conv1.weight"] = torch.zeros(32, 16, 3, 3)
    path = tmp_path / "bad.pt"
    torch.save(sd, path)
    with pytest.raises(DatafreeError) as ei:
        load_weights(create_model("resnet20"), path)
    msg = str(ei.value)
    assert "layer2.1.conv1.weight" in msg
    assert "(32, 16, 3, 3)" in msg and "(32, 32, 3, 3)" in msg


def test_load_weights_missing_key_named(tmp_path):
    sd = create_model("resnet20").state_dict()
    del sd["layer3.2.bn2.running_var"]
    path = tmp_path / "missing.pt"
    torch.save(sd, path)
    with pytest.raises(DatafreeError, match=r"missing key 'layer3\.2\.bn2\.running_var'"):
        load_weights(create_model("resnet20"), path)


def test_load_weights_unexpected_key_named(tmp_path):
    sd = create_model("resnet20").state_dict()
    sd["extra_head.weight"] = torch.zeros(3)
    path = tmp_path / "extra.pt"
    torch.save(sd, path)
    with pytest.raises(DatafreeError, match=r"unexpected key 'extra_head\.weight'"):
        load_weights(create_model("resnet20"), path)


def test_load_weights_failed_load_leaves_model_untouched(tmp_path):
    sd = _trained_like(seed=5).state_dict()
    sd["linear.weight"] = torch.zeros(10, 32)
    path = tmp_path / "bad.pt"
    torch.save(sd, path)
    model = create_model("resnet20")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(DatafreeError):
        load_weights(model, path)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def _mark(path):
    """Run by the unpickler if the malicious payload is ever executed."""
    with open(path, "w") as f:
        f.write("code ran")
    return {}


class _Payload:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (_mark, (self.path,))


def test_load_weights_refuses_pickled_objects(tmp_path):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.pt"
    torch.save(_Payload(marker), path)
    with pytest.raises(DatafreeError, match="holds Python objects besides tensors, which datafree never unpickles"):
        load_weights(create_model("resnet20"), path)
    with pytest.raises(DatafreeError):
        read_state_dict(path)
    assert not marker.exists(), "weights_only loading must never execute pickled code"
    # control: the payload is live under unrestricted unpickling, so the check above is meaningful
    torch.load(path, weights_only=False)
    assert marker.read_text() == "code ran"


class _Plain:
    def __init__(self):
        self.w = torch.ones(2)


def test_load_weights_refuses_custom_class_instance(tmp_path):
    path = tmp_path / "obj.pt"
    torch.save(_Plain(), path)
    with pytest.raises(DatafreeError, match="holds Python objects besides tensors, which datafree never unpickles"):
        load_weights(create_model("resnet20"), path)


def test_read_state_dict_errors(tmp_path):
    with pytest.raises(DatafreeError, match="not found"):
        read_state_dict(tmp_path / "nope.pt")
    torch.save([torch.ones(2)], tmp_path / "list.pt")
    with pytest.raises(DatafreeError, match="does not hold a state_dict"):
        read_state_dict(tmp_path / "list.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage")
    with pytest.raises(DatafreeError):
        read_state_dict(tmp_path / "junk.pt")


# ---------------------------------------------------------------------------------------------------
# verified teachers in ../shared
# ---------------------------------------------------------------------------------------------------

RESNET20_SHA256 = "2684892afba237d0d86a0f57415dc19741ca1c854f687af524c37552926a5a8a"


def _accuracy(model: nn.Module, npz, n: int = 500) -> float:
    ds = load_npz(npz)
    meta = model.datafree_meta
    x = normalize(ds.x[:n].float().div(255.0), meta.mean, meta.std)
    return evaluate(model, x, ds.y[:n], batch_size=250)["accuracy"]


@pytest.mark.shared
def test_shared_resnet20_cifar10(shared_dir):
    ckpt = shared_dir / "models" / "cifar10" / "resnet20.pt"
    digest = sha256_file(ckpt)
    assert digest == RESNET20_SHA256
    assert KNOWN_CHECKPOINTS[digest] == "resnet20"
    model = load_weights(create_model("resnet20"), ckpt)
    acc = _accuracy(model, shared_dir / "data" / "cifar10" / "test.npz")
    assert acc >= 0.88, acc


@pytest.mark.shared
def test_shared_wrong_verified_checkpoint_refused(shared_dir):
    with pytest.raises(DatafreeError, match="resnet56"):
        load_weights(create_model("resnet20"), shared_dir / "models" / "cifar10" / "resnet56.pt")


@pytest.mark.shared
def test_shared_cifar100_resnet56(shared_dir):
    ckpt = shared_dir / "models" / "cifar100" / "resnet56.pt"
    assert KNOWN_CHECKPOINTS[sha256_file(ckpt)] == "cifar100_resnet56"
    model = load_weights(create_model("cifar100_resnet56"), ckpt)
    acc = _accuracy(model, shared_dir / "data" / "cifar100" / "test.npz")
    assert acc >= 0.65, acc


def test_corrupt_copy_of_a_verified_checkpoint_fails_its_checksum(tmp_path):
    d = tmp_path / "models" / "cifar10"
    d.mkdir(parents=True)
    torch.save(create_model("resnet20").state_dict(), d / "resnet20.pt")  # right layout, wrong bytes
    with pytest.raises(DatafreeError, match="fails its sha256 check"):
        load_weights(create_model("resnet20"), d / "resnet20.pt")


def _fake_libraries(monkeypatch) -> None:
    """Stand-ins for timm and torchvision (neither imports beside this torch): the same entry points."""
    import types

    from tests.tiny import tiny_cnn

    def timm_create(name, pretrained=False, num_classes=1000):
        assert pretrained is False  # nothing may be downloaded
        m = tiny_cnn(num_classes)
        m.pretrained_cfg = {"input_size": (3, 8, 8), "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
        m.num_classes = num_classes
        return m

    def tv_get_model(name, weights=None, num_classes=1000):
        if name != "tiny":
            raise ValueError(f"Unknown model {name}")
        assert weights is None
        return tiny_cnn(num_classes)

    timm = types.SimpleNamespace(is_model=lambda n: n == "tiny", create_model=timm_create)
    tv = types.SimpleNamespace(models=types.SimpleNamespace(get_model=tv_get_model))
    monkeypatch.setitem(sys.modules, "timm", timm)
    monkeypatch.setitem(sys.modules, "torchvision", tv)


def test_timm_and_torchvision_architectures_are_models_when_installed(monkeypatch, tmp_path, capsys):
    from datafree.cli import main

    monkeypatch.setitem(sys.modules, "timm", None)  # not installed: one line that says what to do
    with pytest.raises(DatafreeError, match="'timm:tiny' needs timm, which does not import here"):
        create_model("timm:tiny", 4)
    _fake_libraries(monkeypatch)
    m = create_model("timm:tiny", 4)
    assert m.datafree_meta == ModelMeta((3, 8, 8), 4, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), "timm:tiny")
    assert create_model("torchvision:tiny", 4).datafree_meta.input_shape == (3, 224, 224)
    with pytest.raises(DatafreeError, match="timm has no architecture 'nope'"):
        create_model("timm:nope")
    with pytest.raises(DatafreeError, match="torchvision has no architecture 'nope'"):
        create_model("torchvision:nope")
    # end to end: a timm teacher's trained weights, a torchvision student told the teacher's input shape
    w = tmp_path / "t.safetensors"
    save_safetensors(trained_tiny_teacher().state_dict(), w)
    code = main(["distill", "--teacher", "timm:tiny", "--teacher-weights", str(w), "--num-classes", "4",
                 "--student", "torchvision:tiny", "--rounds", "1", "--quiet", "--out", str(tmp_path / "run")])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "run" / "student.safetensors").is_file()
