"""Stored fine-tunes stopped early at their own target loss (``jqodi finetune --target-loss``) as evidence
for another target: censored for a lower target, used normally for a target at or above theirs."""
import numpy as np

from jqodi.cli import main
from jqodi.core.estimates import load_estimates
from jqodi.core.traces import TraceStore
from jqodi.learning.estimate import stopped_above
from jqodi.learning.prior import CurvePrior
from jqodi.learning.prior.variants import VARIANTS

REQUESTED = 30


def full_curve(seed: int) -> np.ndarray:
    """0.5 + 2.5·k^-0.7 with 0.5 % noise: first ≤ 1.2 at epoch 7, ≤ 0.9 at 14, ≤ 0.8 at 21."""
    k = np.arange(1, REQUESTED + 1, dtype=float)
    return (0.5 + 2.5 * k ** -0.7) * np.exp(np.random.default_rng(seed).normal(0, 0.002, k.size))


def record(store, seed: int, stop_at: float | None, *, bits: int = 4):
    """A fine-tune as ``finetune(..., stop_at_loss=stop_at)`` records it: cut at its first epoch ≤ stop_at."""
    curve = full_curve(seed)
    if stop_at is not None:
        curve = curve[: int(np.flatnonzero(curve <= stop_at)[0]) + 1]
    return store.record({"model": "lenet", "bits": bits, "dataset": "fashion-mnist", "data_name": "data2",
                         "train_size": 1000, "val_size": 300, "seed": seed, "width": 0.25, "base_loss": 0.45,
                         "start_loss": 3.2, "gamma": 0.1, "gamma_robust": 0.2, "source": "finetune",
                         "config": {"pretrain_epochs": 4, "stop_at_loss": stop_at, "epochs_requested": REQUESTED}},
                        [{"epoch": i + 1, "val_loss": float(v)} for i, v in enumerate(curve)])


def args(db, out, bits=4):
    return ["estimate", "--target-loss", "0.9", "--models", "lenet", "--bits", str(bits), "--method", "store",
            "--data", "data2", "--train-size", "1000", "--val-size", "300", "--store", str(db), "--out", str(out),
            "--quiet"]


def test_a_run_stopped_at_a_higher_target_is_censored_not_extrapolated(tmp_path, capsys):
    db = tmp_path / "t.db"
    with TraceStore(db) as s:
        for seed in range(3):
            record(s, seed, 1.2)
        runs = s.runs()
    assert all(len(r.val_losses) == 7 and stopped_above(r, 0.9) for r in runs)
    assert not any(stopped_above(r, 1.2) or stopped_above(r, 1.3) for r in runs)   # it reached those first
    # every run ends above 0.9: they say only K > 7 (before: their 7 epochs extrapolated to a K^exp, no note)
    assert main(args(db, tmp_path / "e.json")) == 2
    err = capsys.readouterr().err
    assert "cannot answer for target loss 0.9" in err and "--method probe" in err
    assert "3 run(s) stopped at a target loss above 0.9: censored" in err and "Traceback" not in err
    # beside three complete runs (K 14): the median of {14, 14, 14, >7, >7, >7} is undecided, still exit 2
    with TraceStore(db) as s:
        for seed in (3, 4, 5):
            record(s, seed, None)
    assert main(args(db, tmp_path / "e.json")) == 2
    assert "3 of 6 stored curves are cut short" in capsys.readouterr().err
    # with a fourth: K^exp the complete runs' 14, K^rob none (a censored sample bounds nothing), said on screen
    with TraceStore(db) as s:
        record(s, 6, None)
    assert main(args(db, tmp_path / "e.json")) == 0
    out = capsys.readouterr().out
    assert "3 run(s) stopped at a target loss above 0.9: censored, K > their last epoch" in out
    assert "censored: K^rob none" in out
    est = load_estimates(tmp_path / "e.json")[0]
    assert est.epochs_expected == 14 and est.epochs_robust is None

def test_a_run_stopped_at_or_below_the_target_counts_normally(tmp_path, capsys):
    db = tmp_path / "t.db"
    with TraceStore(db) as s:
        for seed in range(3):
            record(s, seed, 0.8)
        record(s, 3, 0.9)
        runs = s.runs()
    assert [len(r.val_losses) for r in runs][:3] == [21, 21, 21]
    assert not any(stopped_above(r, 0.9) for r in runs)
    assert main(args(db, tmp_path / "e.json")) == 0
    est = load_estimates(tmp_path / "e.json")[0]
    assert est.epochs_expected == 14 and est.epochs_robust is not None and est.epochs_robust >= 14
    assert est.source == "measured:store(4 runs)"     # no note: nothing censored
    assert "stopped at a target" not in capsys.readouterr().out


def test_only_a_run_its_own_target_stopped_is_cut_short(tmp_path):
    with TraceStore(tmp_path / "t.db") as s:
        # asked 30 epochs, target 0.45 never reached: it ran to its end; so did one asked 7 epochs that stopped at 7
        never = s.record({"model": "lenet", "bits": 4, "dataset": "fashion-mnist", "data_name": "data2",
                          "train_size": 1000, "val_size": 300, "seed": 0, "width": 0.25, "base_loss": 0.45,
                          "start_loss": 3.2, "source": "finetune",
                          "config": {"stop_at_loss": 0.45, "epochs_requested": REQUESTED}},
                         [{"epoch": i + 1, "val_loss": float(v)} for i, v in enumerate(full_curve(0))])
        whole = s.record({"model": "lenet", "bits": 4, "dataset": "fashion-mnist", "data_name": "data2",
                          "train_size": 1000, "val_size": 300, "seed": 1, "width": 0.25, "base_loss": 0.45,
                          "start_loss": 3.2, "source": "finetune",
                          "config": {"stop_at_loss": 1.2, "epochs_requested": 7}},
                         [{"epoch": i + 1, "val_loss": float(v)} for i, v in enumerate(full_curve(1)[:7])])
        plain = record(s, 2, None)
        by_id = {r.id: r for r in s.runs()}
    assert not any(stopped_above(by_id[i], 0.3) for i in (never, whole, plain))


def test_the_prior_never_reads_a_stopped_run_past_its_end(tmp_path):
    """The learned prior's library takes a run's epochs as they are: a target below a truth run's best
    counts as K ≥ its length + 1 (a lower bound), never from an extrapolated curve — a run cut by its own
    stop target is no full curve for deeper targets, and runs without stop_at_loss are unchanged."""
    with TraceStore(tmp_path / "t.db") as s:
        for seed in range(2):
            record(s, seed, None, bits=4)
            record(s, seed + 2, 1.2, bits=2)
        prior = CurvePrior.from_store(s)
    cut = {i for i, r in enumerate(prior.runs) if r.losses.size == 7}
    assert len(cut) == 2
    for variant in VARIANTS:
        smp = prior.samples(variant, 5)
        depth, err, run = smp.arrays()
        k_true = np.exp(depth + err)
        mine = np.isin(run, list(cut))
        if mine.any():
            assert k_true[mine].max() <= 8 + 1e-6       # its epochs, or at most len + 1 = 8: a lower bound


def test_auto_makes_a_probe_estimate_and_says_why_the_stopped_runs_were_not_used(tmp_path):
    import torch
    from torch.utils.data import TensorDataset

    from jqodi.core.data import EndDeviceData
    from jqodi.core.pretrained import Pretrained
    from jqodi.core.zoo import build_model
    from jqodi.learning.estimate import estimate_candidate

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(72, 1, 28, 28, generator=g), torch.randint(0, 10, (72,), generator=g)
    data = EndDeviceData("data2", "fashion-mnist", TensorDataset(x[:48], y[:48]), TensorDataset(x[48:], y[48:]),
                         (1, 28, 28), 10, 0)
    torch.manual_seed(0)
    pre = Pretrained(build_model("lenet", (1, 28, 28), 10, 0.25, seed=0).eval(), torch.randn(16, 1, 28, 28),
                     {"width": 0.25, "epochs": 4, "cloud_train_size": 100})
    with TraceStore(tmp_path / "t.db") as s:
        for seed in range(3):
            record(s, seed, 1.2)
        e = estimate_candidate("lenet", 4, 0.9, data, store=s, method="auto", probe_epochs=2, pretrained=pre,
                               width=0.25, progress=False)
        assert [r.source for r in s.runs()].count("probe") == 1     # the probe it made instead
    assert e.source.startswith("measured:prior+probe(") or e.source.startswith("measured:probe(")
    assert "not the store's 3 runs: 3 of 3 stored curves are cut short" in e.source
    assert "3 run(s) stopped at a target loss above 0.9: censored" in e.source
