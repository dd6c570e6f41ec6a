import copy

import pytest
import torch

torch.set_num_threads(1)

from jqodi.core.data import FASHION_MNIST_DIR, end_device_data  # noqa: E402
from jqodi.core.traces import TraceStore  # noqa: E402
from jqodi.core.quant import pack_model, prepare_qat, quant_layers, unpack_model  # noqa: E402
from jqodi.core.codec import apply_update, pack_update, update_size_bytes # noqa: E402
from jqodi.core.pretrained import load_pretrained  # noqa: E402
from jqodi.core.training import TrainConfig, epoch_batch_order, evaluate, make_optimizer, train_step  # noqa: E402
from jqodi.learning.reference import finetune, protocol_epoch  # noqa: E402
from jqodi.core.zoo import build_model  # noqa: E402

HAVE_FMNIST = (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file()


def test_epoch_batch_order_is_a_seeded_permutation():
    a = epoch_batch_order(103, 10, seed=1, epoch=2)
    assert sorted(torch.cat(a).tolist()) == list(range(103))
    assert all(len(b) >= 2 for b in a) and len(a) == 11
    assert [b.tolist() for b in a] == [b.tolist() for b in epoch_batch_order(103, 10, 1, 2)]
    assert torch.cat(a).tolist() != torch.cat(epoch_batch_order(103, 10, 1, 3)).tolist()
    assert torch.cat(a).tolist() != torch.cat(epoch_batch_order(103, 10, 2, 2)).tolist()
    assert [len(b) for b in epoch_batch_order(21, 10, 0, 1)] == [10, 11]  # a lone sample is merged


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_split_optimizers_equal_one_optimizer(optimizer):
    """The runtime's SD (shallow) + ES (deep) optimizers must reproduce the single-process step."""
    torch.manual_seed(0)
    cfg = TrainConfig(optimizer=optimizer, lr=0.01, weight_decay=1e-4)
    x, y = torch.randn(8, 1, 16, 16), torch.randint(0, 10, (8,))
    whole = prepare_qat(build_model("lenet", (1, 16, 16), 10, 0.125, seed=0), 4, calibration=x)
    split = copy.deepcopy(whole)
    opt = make_optimizer(whole, cfg)
    shallow, deep = split.shallow(2), split.deep(2)
    o1, o2 = make_optimizer(shallow, cfg), make_optimizer(deep, cfg)
    for _ in range(3):
        train_step(whole, opt, x, y)
        o1.zero_grad(), o2.zero_grad()
        split.train()
        h = shallow(x)
        h_remote = h.detach().requires_grad_()
        loss = torch.nn.functional.cross_entropy(deep(h_remote), y)
        loss.backward()
        h.backward(h_remote.grad)
        o1.step(), o2.step()
    for p, q in zip(whole.parameters(), split.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


@pytest.mark.parametrize("mode", ["codes", "stochastic", "delta-fp16", "latent"])
def test_return_trip_modes(mode):
    torch.manual_seed(0)
    x = torch.randn(8, 1, 16, 16)
    master = prepare_qat(build_model("lenet", (1, 16, 16), 10, 0.125, seed=0), 2, calibration=x)
    before = {k: v.clone() for k, v in master.state_dict().items()}
    sent = pack_model(master, 2)
    worker = copy.deepcopy(master)
    unpack_model(worker, sent)
    deltas = {}
    with torch.no_grad():
        for name, layer in quant_layers(worker):
            d = 0.2 * layer.weight_step.view(-1, *([1] * (layer.weight.dim() - 1))) * torch.rand_like(layer.weight)
            layer.weight.add_(d)  # a sub-step change: below half a quantization step
            deltas[name + ".weight"] = d
    up = pack_update(worker, sent, mode, generator=torch.Generator().manual_seed(12345))
    assert up.nbytes == update_size_bytes(master, 2, mode)
    apply_update(master, up, sent)
    after = master.state_dict()
    for key, d in deltas.items():
        moved = after[key] - before[key]
        if mode == "codes":  # nearest rounding loses a sub-step change: the paper's q-bit return
            assert torch.equal(moved, torch.zeros_like(moved))
        elif mode == "latent":
            assert torch.allclose(moved, d, atol=1e-6)
        elif mode == "delta-fp16":
            assert torch.allclose(moved, d, atol=1e-3 * float(d.abs().max()) + 1e-6)
    if mode == "stochastic":  # unbiased on average over all weights (clipped ones aside)
        moved = torch.cat([(after[k] - before[k]).flatten() for k in deltas])
        d = torch.cat([v.flatten() for v in deltas.values()])
        assert moved.abs().sum() > 0
        assert abs(float(moved.mean() - d.mean())) < 0.5 * float(d.mean())


def test_protocol_epoch_is_deterministic_and_counts_bytes():
    torch.manual_seed(0)
    x, y = torch.randn(40, 1, 16, 16), torch.randint(0, 10, (40,))
    ds = torch.utils.data.TensorDataset(x, y)
    cfg = TrainConfig(batch_size=8, lr=1e-3)
    recs = []
    for _ in range(2):
        master = prepare_qat(build_model("lenet", (1, 16, 16), 10, 0.125, seed=0), 4, calibration=x)
        worker = copy.deepcopy(master)
        recs.append([protocol_epoch(master, worker, ds, ds, 4, cfg, seed=3, epoch=e) for e in (1, 2)])
    assert [r.val_loss for r in recs[0]] == [r.val_loss for r in recs[1]]
    assert recs[0][0].bytes_down == recs[0][0].bytes_up == pack_model(master, 4).nbytes


@pytest.mark.skipif(not HAVE_FMNIST, reason="Fashion-MNIST not installed")
def test_real_fashion_mnist_finetune_lowers_val_loss_and_is_recorded(tmp_path):
    pre = load_pretrained("lenet", "fashion-mnist", 0.125, epochs=1, cloud_size=1500,
                          cache_dir=tmp_path / "cache", progress=False)
    assert pre.path.is_file()
    again = load_pretrained("lenet", "fashion-mnist", 0.125, epochs=1, cloud_size=1500,
                            cache_dir=tmp_path / "cache", progress=False)
    for p, q in zip(pre.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(p, q)
    data = end_device_data("data1", train_size=256, val_size=128, seed=0)
    with TraceStore(tmp_path / "traces.db") as store:
        r = finetune("lenet", 2, data, 3, seed=0, pretrained=pre, store=store, progress=False,
                     cfg=TrainConfig(lr=1e-3, batch_size=32))
        assert r.val_losses[-1] < r.start_loss
        assert r.gamma > 0 and r.gamma_robust >= r.gamma
        runs = store.runs(model="lenet", bits=2)
        assert len(runs) == 1 and runs[0].id == r.id
        assert runs[0].val_losses == pytest.approx(r.val_losses)
        assert runs[0].train_size == 256 and runs[0].base_loss == pytest.approx(r.base_loss)
    # evaluate agrees with the recorded L_a
    assert evaluate(pre.model, data.val)[0] == pytest.approx(r.base_loss, rel=1e-5)


def test_cifar_pipeline_end_to_end_on_tiny_pickles(tmp_path):
    import pickle

    import numpy as np

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (40, 3072)).astype(np.uint8),
                         b"labels": [int(v) for v in rng.integers(0, 10, 40)]}, f, protocol=2)
    pre = load_pretrained("lenet", "cifar10", 0.125, epochs=1, data_dir=tmp_path, cache_dir=tmp_path / "c",
                          progress=False)
    assert pre.meta["input_shape"] == [3, 32, 32] and pre.calibration.shape[1:] == (3, 32, 32)
    data = end_device_data("data1", "cifar10", tmp_path, train_size=24, val_size=8)
    r = finetune("lenet", 4, data, 1, seed=0, pretrained=pre, progress=False, cfg=TrainConfig(batch_size=8))
    assert len(r.epochs) == 1 and r.epochs[0].bytes_up > 0
