"""Runtime, in one process: the split protocol equals the reference, privacy, wire formats, config."""
from __future__ import annotations

import copy
import threading
import time

import pytest
import torch
from torch.utils.data import TensorDataset

from jqodi.errors import RuntimeFailure
from jqodi.runtime.job import Job, JobError
from jqodi.runtime.local import run_inprocess
from jqodi.runtime.transport import InProcessHub, InProcessTransport, decode_message, encode_message
from jqodi.core.codec import cut_tensor_bytes, decode_cut, encode_cut

SHAPE = (1, 28, 28)


class _Data:
    def __init__(self, n_train=160, n_val=50, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.train = TensorDataset(torch.randn(n_train, *SHAPE, generator=g), torch.randint(0, 10, (n_train,), generator=g))
        self.val = TensorDataset(torch.randn(n_val, *SHAPE, generator=g), torch.randint(0, 10, (n_val,), generator=g))


def _job(**kw) -> Job:
    d = {"model": "lenet", "bits": 4, "width": 0.125,
         "schedule": [{"edge": "a", "cut": 1, "epochs": 1}, {"edge": "b", "cut": 3, "epochs": 1}],
         "training": {"batch_size": 32, "eval_batch_size": 20}, "timeout_s": 10, "meter": "null"}
    d.update(kw)
    return Job.from_dict(d)


def _master(data, bits=4, model="lenet", width=0.125):
    from jqodi.core.quant import prepare_qat
    from jqodi.core.zoo import build_model

    m = build_model(model, SHAPE, 10, width, seed=1)
    return prepare_qat(m, bits, None, calibration=data.train.tensors[0][:32])


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("model,cuts,return_mode", [("lenet", (1, 3), None), ("resnet20", (2, 1), "codes"),
                                                    ("lenet", (2, 4), "delta-fp16")])
def test_split_training_equals_single_process_reference(model, cuts, return_mode):
    """Same seed and batches: the split run's master equals train.protocol_epoch's, epoch by epoch,
    while the edge and the cut change between epochs."""
    from jqodi.learning.reference import protocol_epoch

    data = _Data()
    width = 0.125 if model == "lenet" else 0.25
    master = _master(data, 4, model, width)
    ref, worker = copy.deepcopy(master), copy.deepcopy(master)
    job = _job(model=model, width=width, schedule=[{"edge": "a", "cut": cuts[0], "epochs": 1},
                                                   {"edge": "b", "cut": cuts[1], "epochs": 1}],
               training={"batch_size": 32, "eval_batch_size": 20, "return_mode": return_mode})
    assert return_mode is not None or job.training.train_config().return_mode == "stochastic"  # the default
    cfg = job.training.train_config()
    want = [protocol_epoch(ref, worker, data.train, data.val, 4, cfg, job.training.seed, e) for e in (1, 2)]
    got = run_inprocess(job, master, data).state.epochs
    for w, g in zip(want, got):
        assert g["train_loss"] == pytest.approx(w.train_loss, rel=1e-5, abs=1e-6)
        assert g["val_loss"] == pytest.approx(w.val_loss, rel=1e-5, abs=1e-6)
        assert g["val_accuracy"] == pytest.approx(w.val_accuracy)
    for (k, a), b in zip(ref.state_dict().items(), master.state_dict().values()):
        if a.is_floating_point():
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=k)
        else:
            assert torch.equal(a, b), k
    # and training moved the weights (the comparison is not between two untouched models)
    assert any(not torch.equal(a, b) for a, b in zip(ref.state_dict().values(),
                                                       _master(data, 4, model, width).state_dict().values()))


def test_raw_images_never_leave_the_end_device():
    """Every message the edges and the cloud received is logged (kind + shapes): none holds an
    input-shaped batch or any tensor equal to a slice of the SD's images."""
    data = _Data(n_train=96, n_val=30)
    run = run_inprocess(_job(schedule=[{"edge": "a", "cut": 1, "epochs": 1}]), _master(data), data)
    seen = 0
    for name in ("cloud", "edge:a"):
        t = run.transports[name]
        for rec in t.log:
            for _, shape, _ in rec.shapes:
                assert tuple(shape[-3:]) != SHAPE, (name, rec)
            seen += 1
    assert seen > 10
    # the end sent activations, labels and its part; the first activation is not an image
    kinds = {r.kind for r in run.transports["end"].log if r.direction == "sent"}
    assert kinds == {"ready", "act", "val_act", "shallow_back", "trailer"}


def test_quantized_cut_traffic_saves_bytes_and_still_learns():
    data = _Data()
    job32 = _job(schedule=[{"edge": "a", "cut": 2, "epochs": 2}])
    job8 = _job(schedule=[{"edge": "a", "cut": 2, "epochs": 2}],
                training={"batch_size": 32, "eval_batch_size": 20, "wire_act_bits": 8, "wire_grad_bits": 8})
    r32 = run_inprocess(job32, _master(data), data).state.epochs
    r8 = run_inprocess(job8, _master(data), data).state.epochs
    cut = lambda r: sum(n["cut"]["bytes"] for n in r[0]["nodes"])  # noqa: E731
    elems = sum(n["cut"]["elements"] for n in r8[0]["nodes"])
    assert cut(r32) > 3.5 * cut(r8)
    assert cut(r8) < 0.3 * 4 * elems
    assert abs(r8[-1]["val_loss"] - r32[-1]["val_loss"]) < 0.1


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_cut_codec_round_trip(bits):
    x = torch.relu(torch.randn(4, 3, 5, 5))
    enc = encode_cut(x, bits)
    n = sum(t.numel() * t.element_size() for k, t in enc.items() if k != "layout")
    assert n == cut_tensor_bytes(x.numel(), bits)
    y = decode_cut(enc)
    assert y.shape == x.shape
    step = float(x.max()) / (2 ** bits - 1)
    assert (y - x).abs().max() <= step / 2 + 1e-6 or bits == 1
    g = torch.randn(4, 3, 5, 5)  # signed (gradients)
    assert decode_cut(encode_cut(g, bits)).shape == g.shape
    assert torch.equal(decode_cut(encode_cut(g, 32)), g)


def test_message_codec_round_trip():
    t = {"a": torch.randn(3, 4), "b": torch.arange(5, dtype=torch.int64), "c": torch.zeros(0, 2),
         "d": torch.tensor([1, 2], dtype=torch.uint8)}
    m = decode_message(encode_message("k", {"x": 1, "y": [1, "z"]}, t), "src", schema=False)
    assert m.kind == "k" and m.meta == {"x": 1, "y": [1, "z"]} and m.src == "src"
    for k, v in t.items():
        assert torch.equal(m.tensors[k], v) and m.tensors[k].dtype == v.dtype


def test_job_rejects_unknown_keys_and_names_them():
    with pytest.raises(JobError, match=r"job\.training\.lrr: unknown key"):
        _job(training={"lrr": 0.1})
    with pytest.raises(JobError, match=r"job\.colour: unknown key"):
        Job.from_dict({**_job().to_dict(), "colour": 1})
    j = _job()
    assert Job.from_dict(j.to_dict()) == j
    assert j.edges == ["a", "b"] and j.epoch_plan() == [("a", 1), ("b", 3)]


def test_job_keeps_the_startup_and_failure_timeouts_apart():
    from jqodi.runtime.job import DEFAULT_STARTUP_TIMEOUT_S

    j = _job()
    assert j.timeout_s == 10 and j.startup_timeout_s == DEFAULT_STARTUP_TIMEOUT_S > j.timeout_s
    assert Job.from_dict(_job(startup_timeout_s=45).to_dict()).startup_timeout_s == 45
    for bad in (0, -1, float("inf")):
        with pytest.raises(JobError, match="startup_timeout_s: must be > 0"):
            _job(startup_timeout_s=bad)


def test_transport_detects_a_silent_peer_and_a_crashed_one():
    hub = InProcessHub()
    a = InProcessTransport(hub, "a", ["a", "b", "c"], timeout_s=0.5, heartbeat_s=10).start()
    b = InProcessTransport(hub, "b", ["a", "b", "c"], timeout_s=0.5, heartbeat_s=10).start()
    InProcessTransport(hub, "c", ["a", "b", "c"], timeout_s=0.5, heartbeat_s=10)
    b.send("a", "hello", {"x": torch.ones(2)}, n=1)
    assert a.recv("b", "hello").meta == {"n": 1}
    t0 = time.monotonic()
    with pytest.raises(RuntimeFailure, match="'b' sent nothing") as e:
        a.recv("b")
    assert e.value.peer == "b" and time.monotonic() - t0 < 2.0
    threading.Timer(0.1, hub.kill, args=("c",)).start()
    with pytest.raises(RuntimeFailure, match="lost the connection to 'c'") as e:
        a.recv("c", timeout_s=5)
    assert e.value.peer == "c"
    b.send("a", "oops")
    with pytest.raises(RuntimeFailure, match="protocol error"):
        a.recv("b", "hello")
    assert a.received["b"].messages == 2 and b.sent["a"].bytes > 0


def test_rate_limited_link_takes_bytes_over_rate():
    hub = InProcessHub()
    a = InProcessTransport(hub, "a", ["a", "b"], timeout_s=5, link_rate_bps={"b": 8e6})
    InProcessTransport(hub, "b", ["a", "b"], timeout_s=5)
    t0 = time.perf_counter()
    n = a.send("b", "x", {"x": torch.zeros(50_000)})  # 200 kB at 1 MB/s
    assert time.perf_counter() - t0 == pytest.approx(n * 8 / 8e6, rel=0.25)


def test_a_crashing_role_is_named_and_the_run_stops():
    data = _Data(n_train=64, n_val=20)

    class Boom(_Data):
        pass
    bad = Boom(n_train=64, n_val=20)
    bad.train = TensorDataset(torch.randn(64, 1, 20, 20), data.train.tensors[1])  # wrong image size
    t0 = time.monotonic()
    with pytest.raises(Exception):
        run_inprocess(_job(timeout_s=3), _master(data), bad)
    assert time.monotonic() - t0 < 10


def test_collaborative_inference_reports_latency_energy_and_matches_local_predictions():
    from jqodi.render.runs import format_inference
    from jqodi.runtime.inference import run_inference
    from jqodi.core.devices import Device
    from jqodi.runtime.job import EmulationConfig, LinkProfile

    data = _Data(n_train=32, n_val=40)
    emu = EmulationConfig(enabled=True, dilation=1.0,
                          devices={"end": Device.from_power("sd", 2e9, 10.0), "edge:a": Device.from_power("es", 5e10, 200.0),
                                   "cloud": Device.from_power("cs", 1e11, 300.0)},
                          links={"edge:a|end": LinkProfile(5e7, 1e-9), "cloud|edge:a": LinkProfile(1e9, 1e-9)})
    job = _job(schedule=[{"edge": "a", "cut": 2, "epochs": 1}], emulation=emu)
    master = _master(data)
    res = run_inference(job, master, data, requests=20)
    assert [r.combo for r in res] == ["sd+a", "sd only"]
    split, local = res
    assert split.requests == local.requests == 20
    assert 0 < split.latency_p50_s <= split.latency_p95_s
    assert set(split.energy_per_request_j) == {"end", "edge:a", "link"}
    assert set(local.energy_per_request_j) == {"end"}
    # the model meter bills busy power × the device's time: the SD alone runs every FLOP
    assert local.energy_per_request_j["end"] == pytest.approx(local.predicted_energy_j, rel=0.05)
    assert split.accuracy == local.accuracy  # same q-bit model, fp32 cut traffic
    assert split.bytes_per_request > 0 and "p50 ms" in format_inference(res)


def test_jqodi_run_cli_plans_and_runs_in_process(tmp_path, capsys):
    from jqodi.cli import main

    if not __import__("pathlib").Path("/usr/share/datasets/fashion-mnist").is_dir():
        pytest.skip("Fashion-MNIST not installed")
    rc = main(["run", "--cpu-scale", "--train-size", "96", "--val-size", "32", "--max-epochs", "1",
               "--random-init", "--transport", "inprocess", "--no-emulate", "--workdir", str(tmp_path),
               "--requests", "100", "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert rc == 0
    # more requests than validation images: served as many as there are, and said so (as 'jqodi infer')
    assert "note: 32 requests per combination, not the 100 asked" in out and "validation split" in out
    assert "plan: " in out and "epoch 1/1" in out and "time per phase" in out and "bytes per link" in out
    import json

    # the scenario's learning table states no spread of K: the online refit weighs it as a probe (5 epochs)
    assert out.count("online K refit: the pre-run K counts as 5 epochs of evidence") == 1 and "no stated spread" in out
    assert json.loads((tmp_path / "controller.json").read_text())["options"]["prior_epochs"] == 5.0

    rec = json.loads((tmp_path / "r.json").read_text())
    assert rec["status"] == "completed" and len(rec["epochs"]) == 1
    assert rec["epochs"][0]["predicted"]["time_s"] > 0
    assert main(["run", "--dilation", "0.5", "--write-job", str(tmp_path / "j.json")]) == 2
    capsys.readouterr()
    assert main(["infer", "--workdir", str(tmp_path), "--requests", "5", "--json", str(tmp_path / "i.json")]) == 0
    out = capsys.readouterr().out
    assert "model after 1 fine-tuning epoch(s)" in out and "p50 ms" in out and "only" in out
    res = json.loads((tmp_path / "i.json").read_text())
    assert len(res) >= 3 and all(r["requests"] == 5 for r in res)  # SD + each edge, and SD only
    # more requests than validation images: served as many as there are, and said so
    assert main(["infer", "--workdir", str(tmp_path), "--requests", "100", "--no-emulate"]) == 0
    out = capsys.readouterr().out
    assert "note: 32 requests per combination, not the 100 asked" in out and "validation split" in out


def test_inprocess_resume_continues_after_the_checkpoint(tmp_path):
    from jqodi.runtime.launch import run_job

    data = _Data(n_train=96, n_val=30)
    job = _job(schedule=[{"edge": "a", "cut": 2, "epochs": 3}], pretrained={"source": "random", "seed": 3})
    first = run_job(job.replace(max_epochs=1), transport="inprocess", workdir=tmp_path, data=data, say=lambda s: None)
    assert [e["epoch"] for e in first.epochs] == [1]
    said: list[str] = []
    resumed = run_job(job, transport="inprocess", workdir=tmp_path, data=data, resume=True, say=said.append)
    assert said[0] == "resuming after epoch 1/3"
    assert [e["epoch"] for e in resumed.epochs] == [1, 2, 3]
    straight = run_job(job, transport="inprocess", workdir=tmp_path / "b", data=data, say=lambda s: None)
    assert [e["val_loss"] for e in resumed.epochs] == pytest.approx([e["val_loss"] for e in straight.epochs], rel=1e-5)


def test_rendezvous_binds_only_the_configured_address():
    from jqodi.runtime.rendezvous import _listen, local_address, role_ranks

    sock = _listen("127.0.0.1", 0)
    try:
        assert sock.getsockname()[0] == "127.0.0.1"
    finally:
        sock.close()
    assert local_address("127.0.0.1") == "127.0.0.1" and local_address("localhost") == "127.0.0.1"
    assert role_ranks(["x", "y"]) == {"cloud": 0, "end": 1, "edge:x": 2, "edge:y": 3}


def test_a_checkpoint_of_an_older_model_format_is_refused_in_one_line(tmp_path):
    from jqodi.core.quant import MODEL_FORMAT_VERSION
    from jqodi.runtime.process import CHECKPOINT_NAME, load_checkpoint, save_checkpoint
    from jqodi.runtime.roles import CloudState

    data, job = _Data(n_train=32, n_val=10), _job()
    save_checkpoint(tmp_path, job, CloudState(_master(data), 1, []))
    assert load_checkpoint(tmp_path, job, _master(data)).epoch == 1
    ck = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=False)
    assert ck["model_format_version"] == MODEL_FORMAT_VERSION == 2
    del ck["model_format_version"]  # a version-1 checkpoint: no version, no act_calibrated buffers
    ck["master"] = {k: v for k, v in ck["master"].items() if not k.endswith("act_calibrated")}
    torch.save(ck, tmp_path / CHECKPOINT_NAME)
    with pytest.raises(RuntimeFailure, match="has model format version 1, this jqodi reads version 2") as e:
        load_checkpoint(tmp_path, job, _master(data))
    assert "\n" not in str(e.value) and CHECKPOINT_NAME in str(e.value)


def test_a_role_refuses_a_cloud_of_another_model_format_in_one_line():
    from datetime import timedelta

    import torch.distributed as dist

    from jqodi.runtime.launch import free_port
    from jqodi.runtime.rendezvous import FORMAT_KEY, connect

    port = free_port()
    store = dist.TCPStore("127.0.0.1", port, None, True, timedelta(seconds=30), wait_for_workers=False)
    for version in (None, "3"):  # None: a version-1 cloud, which published no version
        if version is not None:
            store.set(FORMAT_KEY, version)
        store.set("job", '{"edges": []}')
        with pytest.raises(RuntimeFailure, match=f"format version {version or 1}, this jqodi reads version 2") as e:
            connect("end", "127.0.0.1", port, 10.0)
        assert "\n" not in str(e.value) and e.value.peer == "cloud"


def test_run_record_round_trip_and_table(tmp_path):
    from jqodi.runtime.record import RunRecord, measure_epoch

    data = _Data(n_train=64, n_val=20)
    raw = run_inprocess(_job(schedule=[{"edge": "a", "cut": 2, "epochs": 1}]), _master(data), data).state.epochs
    m = measure_epoch(raw[0], 2.0, {"edge:a|end": 1e-9})
    assert m["time_s"] == pytest.approx(raw[0]["wall_s"] / 2) and m["epoch"] == 1
    assert m["bytes"]["end->edge:a"] > 0 and m["transfer_energy_j"]["end->edge:a"] == pytest.approx(
        8e-9 * m["bytes"]["end->edge:a"])
    m["predicted"] = {"time_s": 1.0, "energy_j": 2.0, "phases_s": {k: 0.1 for k in m["phases_s"]},
                      "phases_j": {k: 0.2 for k in m["phases_s"]}}
    rec = RunRecord(job={}, epochs=[m], dilation=2.0, emulated=True)
    from jqodi.render.runs import run_table

    text = run_table(rec)
    assert "dilation ×2" in text and "end_compute" in text and "bytes per link" in text
    rec.save(tmp_path / "r.json")
    back = RunRecord.load(tmp_path / "r.json")
    assert back.epochs[0]["epoch"] == 1 and back.totals["predicted_time_s"] == 1.0


def test_roles_serve_inference_after_training_including_an_idle_edge():
    """After the last epoch the cloud sends the fine-tuned model to every edge with a process (also
    one that only serves inference); the SD serves requests with each and alone, and reports."""
    from jqodi.core.devices import Device
    from jqodi.runtime.job import EmulationConfig, LinkProfile

    data = _Data(n_train=64, n_val=20)
    emu = EmulationConfig(enabled=False, devices={"end": Device.from_power("sd", 2e9, 10.0),
                                                  "edge:a": Device.from_power("es-a", 5e10, 200.0),
                                                  "edge:b": Device.from_power("es-b", 8e10, 300.0),
                                                  "cloud": Device.from_power("cs", 1e11, 300.0)},
                          links={"edge:a|end": LinkProfile(5e7, 1e-9), "edge:b|end": LinkProfile(5e7, 1e-9)})
    job = _job(schedule=[{"edge": "a", "cut": 2, "epochs": 1}], emulation=emu, inference_requests=6,
               inference_edges=["a", "b"])
    assert job.edges == ["a", "b"]
    inf = run_inprocess(job, _master(data), data).state.inference
    assert [(r["combo"], r["cut"], r["requests"]) for r in inf] == [("sd+a", 2, 6), ("sd+b", 2, 6), ("sd only", None, 6)]
    assert len({r["accuracy"] for r in inf}) == 1  # one q-bit model, fp32 cut traffic
    assert set(inf[1]["energy_per_request_j"]) == {"end", "edge:b", "link"}
