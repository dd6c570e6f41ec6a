"""Your own data: an image folder (one sub-folder per class, PNG/JPEG) and .npz arrays, as the end
device's data and as the cloud's pretraining data; a scenario whose data cannot be loaded is
refused before planning."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml

from jqodi.core.data import check_scenario_data, cloud_dataset, dataset_classes, end_device_data
from jqodi.core.userdata import load_user_dataset
from jqodi.errors import DataError, ScenarioError

REPO = Path(__file__).resolve().parents[1]
HAVE_FMNIST = Path("/usr/share/datasets/fashion-mnist").is_dir() or bool(os.environ.get("JQODI_DATA_DIR"))
CIFAR10 = Path(os.environ.get("JQODI_CIFAR10_DIR", REPO.parent / "shared/datasets/cifar-10-batches-py"))


def image_folder(root: Path, *, classes=("cat", "dog", "fox"), per_class=8, size=(12, 10), mode="RGB",
                 splits=False, seed=0) -> Path:
    """A tiny image folder: ``classes`` sub-folders of PNG and JPEG images, each class its own colour."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split in (("train", "val") if splits else ("",)):
        for k, name in enumerate(classes):
            d = root / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class if split != "val" else max(2, per_class // 4)):
                base = np.full((size[1], size[0], 3), (40 + 80 * k) % 200 + 20, dtype=np.int16)
                arr = np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)
                img = Image.fromarray(arr).convert(mode)
                img.save(d / (f"{i}.png" if i % 2 else f"{i}.jpg"), quality=95)
    return root


def test_an_image_folder_is_a_dataset(tmp_path):
    ud = load_user_dataset(image_folder(tmp_path / "pets"))
    assert ud.classes == ("cat", "dog", "fox") and ud.input_shape == (3, 10, 12)
    assert len(ud.y_train) + len(ud.y_val) == 24 and len(ud.y_val) == 4
    assert set(ud.y_train) | set(ud.y_val) == {0, 1, 2}
    # its own splits, grayscale, resized to what the model expects
    ud = load_user_dataset(image_folder(tmp_path / "g", mode="L", splits=True), shape=(1, 28, 28))
    assert ud.input_shape == (1, 28, 28) and len(ud.y_val) == 6 and len(ud.y_train) == 24


def test_npz_arrays_are_a_dataset(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "a.npz", x_train=rng.integers(0, 255, (20, 8, 8, 3), dtype=np.uint8),
             y_train=np.arange(20) % 4, x_val=rng.random((6, 8, 8, 3)), y_val=np.arange(6) % 4)
    ud = load_user_dataset(tmp_path / "a.npz")
    assert ud.input_shape == (3, 8, 8) and ud.num_classes == 4 and len(ud.y_val) == 6
    np.savez(tmp_path / "b.npz", x=rng.integers(0, 255, (10, 28, 28), dtype=np.uint8), y=np.arange(10) % 2)
    ud = load_user_dataset(tmp_path / "b.npz")
    assert ud.input_shape == (1, 28, 28) and len(ud.y_train) == 8 and len(ud.y_val) == 2


@pytest.mark.parametrize("make,needle", [
    (lambda p: p, "no such folder"),
    (lambda p: (p.mkdir(), p)[1], "needs one sub-folder per class"),
    (lambda p: (p.mkdir(), (p / "a").mkdir(), (p / "b").mkdir(), p)[3], "no png/jpg/jpeg images"),
    (lambda p: (image_folder(p), (p / "cat" / "9.png").write_bytes(b"not a png"), p)[2], "not a readable image"),
    (lambda p: (p.parent.joinpath("x.npz").write_bytes(b"junk"), p.parent / "x.npz")[1], "not a readable .npz"),
    (lambda p: (np.savez(p.parent / "y.npz", images=np.zeros(3)), p.parent / "y.npz")[1], "expected arrays"),
    (lambda p: (np.savez(p.parent / "z.npz", x=np.zeros((4, 5, 5)) + 2, y=np.arange(4)), p.parent / "z.npz")[1],
     "within [0, 1]"),
])
def test_a_broken_dataset_is_one_clear_error(tmp_path, make, needle):
    path = make(tmp_path / "data")
    with pytest.raises(DataError, match=None) as e:
        load_user_dataset(path)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_own_data_for_the_cloud_and_the_end_device(tmp_path):
    """The cloud pretrains on one image folder; the SD's data is another, shaped and normalised as it."""
    cloud = image_folder(tmp_path / "cloud", per_class=10)
    sd = image_folder(tmp_path / "sd", per_class=6, size=(20, 20), seed=1)
    assert dataset_classes(str(cloud)) == 3
    full = cloud_dataset(str(cloud))
    assert tuple(full.tensors[0].shape[1:]) == (3, 10, 12)
    d = end_device_data(str(sd), str(cloud), train_size=10)
    assert d.input_shape == (3, 10, 12) and d.num_classes == 3 and d.train_size == 10 and d.val_size == 3
    assert abs(float(d.cloud.tensors[0].mean())) < 0.5  # normalised by the cloud data's own statistics
    with pytest.raises(DataError, match="requested"):
        end_device_data(str(sd), str(cloud), train_size=100)


@pytest.mark.skipif(not HAVE_FMNIST, reason="Fashion-MNIST not installed")
def test_own_end_device_data_on_the_built_in_cloud(tmp_path):
    sd = image_folder(tmp_path / "sd", classes=tuple("abcd"), per_class=5)
    d = end_device_data(str(sd), "fashion-mnist")
    assert d.input_shape == (1, 28, 28) and d.num_classes == 10
    many = image_folder(tmp_path / "many", classes=tuple(f"c{i:02d}" for i in range(11)), per_class=2)
    with pytest.raises(DataError, match="11 classes"):
        end_device_data(str(many), "fashion-mnist")


def _scenario(tmp_path, **data) -> dict:
    d = yaml.safe_load((REPO / "src/jqodi/scenarios/cpu-demo.yaml").read_text())
    d["data"].update(data)
    return d


def test_a_scenario_names_a_dataset_or_a_path():
    from jqodi.core.scenario import parse_scenario

    with pytest.raises(ScenarioError, match="data.dataset"):
        parse_scenario(_scenario(None, dataset="imagenet"))
    with pytest.raises(ScenarioError, match="data.split"):
        parse_scenario(_scenario(None, split="data3"))
    s = parse_scenario(_scenario(None, dataset="./my-images", split="cifar/own.npz", data_dir="/data"))
    assert s.data.dataset == "./my-images" and s.data.data_dir == "/data"


def test_a_scenario_whose_data_cannot_be_loaded_is_refused_before_planning(tmp_path, capsys, monkeypatch):
    from jqodi.cli import main
    from jqodi.core.scenario import parse_scenario

    monkeypatch.setenv("JQODI_HOME", str(tmp_path / "home"))
    folder = image_folder(tmp_path / "sd", per_class=4)
    bad = parse_scenario(_scenario(tmp_path, dataset=str(folder), split=str(folder), train_size=500,
                                   val_size=2, input_shape=[3, 10, 12], num_classes=3))
    with pytest.raises(DataError, match="500 train images requested"):
        check_scenario_data(bad.data)
    wrong = parse_scenario(_scenario(tmp_path, dataset=str(folder), split=str(folder), train_size=4,
                                     val_size=2, input_shape=[1, 28, 28], num_classes=3))
    with pytest.raises(DataError, match="data.input_shape"):
        check_scenario_data(wrong.data)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(_scenario(tmp_path, dataset=str(tmp_path / "nowhere"), split="data1")))
    assert main(["run", str(path), "--workdir", str(tmp_path / "wd")]) == 2
    captured = capsys.readouterr()
    assert "nowhere" in captured.err and "planning" not in captured.out


def test_a_run_refused_for_its_data_leaves_no_empty_workdir(tmp_path, capsys, monkeypatch):
    """The lock creates the workdir before the data check: a refused run removes the folders it
    created (``new/wd``), and keeps a workdir that was there before."""
    from jqodi.cli import main

    monkeypatch.setenv("JQODI_HOME", str(tmp_path / "home"))
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(_scenario(tmp_path, dataset=str(tmp_path / "nowhere"), split="data1")))
    assert main(["run", str(path), "--workdir", str(tmp_path / "new" / "wd")]) == 2
    assert not (tmp_path / "new").exists()
    (tmp_path / "old").mkdir()
    assert main(["run", str(path), "--workdir", str(tmp_path / "old")]) == 2
    assert (tmp_path / "old").is_dir() and not any((tmp_path / "old").iterdir())
    capsys.readouterr()


@pytest.mark.skipif(not (CIFAR10 / "data_batch_1").is_file(), reason="CIFAR-10 (../shared/datasets) not present")
def test_cifar10_in_its_pickle_layout():
    d = end_device_data("data1", "cifar10", str(CIFAR10.parent), train_size=50, val_size=20)
    assert d.input_shape == (3, 32, 32) and d.num_classes == 10 and d.train_size == 50


def test_one_canonical_name_per_folder_and_one_folder_per_name(tmp_path, monkeypatch):
    """Traces and estimates are tied to data by canonical_data_name: a folder gets one name however it
    is written (trailing slash, a symbolic link, relative or absolute), two folders never share one,
    and a known name (data1, cifar10; any case) never turns into a folder of the current directory."""
    from jqodi.core.data import canonical_data_name, canonical_dataset
    from jqodi.core.data.catalog import SD_SPLIT_NAMES
    from jqodi.core.data.end_device import SD_SPLITS
    from jqodi.core.userdata import is_user_dataset

    assert tuple(SD_SPLITS) == SD_SPLIT_NAMES
    (tmp_path / "a" / "imgs").mkdir(parents=True)
    (tmp_path / "b" / "imgs").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "a" / "imgs", target_is_directory=True)
    for known in ("data1", "data2", "cifar10", "fashion-mnist"):
        (tmp_path / known).mkdir()
    monkeypatch.chdir(tmp_path)
    real = str((tmp_path / "a" / "imgs").resolve())
    for written in ("a/imgs", "./a/imgs", "a/imgs/", "a//imgs", str(tmp_path / "a" / "imgs"), "link", "./link/",
                    "b/../a/imgs"):
        assert canonical_data_name(written) == real, written
    assert canonical_data_name("b/imgs") != real
    # the paper's splits and the named datasets keep their meaning beside a folder of that name
    assert [canonical_data_name(n) for n in ("data1", "Data1", "DATA2")] == ["data1", "data1", "data2"]
    assert canonical_dataset("cifar10") == "cifar10" and not is_user_dataset("data1")
    assert canonical_data_name("./data1") == str((tmp_path / "data1").resolve())   # the folder, written as a path
    assert is_user_dataset("a") and canonical_data_name("a") == str((tmp_path / "a").resolve())  # a bare folder


def test_a_home_folder_of_no_such_user_is_one_line(tmp_path, capsys):
    """'~user/...' written where the shell does not expand it (quoted, a file): a one-line error, exit 2."""
    from jqodi.cli import main
    from jqodi.core.data import canonical_data_name

    with pytest.raises(DataError, match=r"^dataset '~no-such-user-jqodi/imgs': no home folder for '~no-such-user-jqodi'$"):
        canonical_data_name("~no-such-user-jqodi/imgs")
    from jqodi.core.traces import TraceStore

    TraceStore(tmp_path / "t.db").close()
    assert main(["traces", "--store", str(tmp_path / "t.db"), "--data", "~no-such-user-jqodi/imgs"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no home folder for '~no-such-user-jqodi'" in err
