"""Trainer end to end on a tiny generated data set (imgsz 64, 8 train / 4 val images)."""

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from yoloseg.cfg import get_cfg
from yoloseg.engine.trainer import Trainer, fitness_of

EXPECTED_COLUMNS = [
    "epoch", "time", "train/box_loss", "train/seg_loss", "train/cls_loss", "train/dfl_loss",
    "metrics/precision(B)", "metrics/recall(B)", "metrics/mAP50(B)", "metrics/mAP50-95(B)",
    "metrics/precision(M)", "metrics/recall(M)", "metrics/mAP50(M)", "metrics/mAP50-95(M)",
    "val/box_loss", "val/seg_loss", "val/cls_loss", "val/dfl_loss", "lr/pg0", "lr/pg1", "lr/pg2",
]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from yoloseg.data.synthetic import generate_synthetic_shapes

    root = tmp_path_factory.mktemp("tiny") / "shapes"
    generate_synthetic_shapes(root, n_train=8, n_val=4, imgsz=64, seed=3)
    return root / "data.yaml"


@pytest.fixture(scope="module")
def src_ckpt(tiny_data, tmp_path_factory):
    """last.pt of a 1-epoch run, the source for transfer and fine-tune tests."""
    project = tmp_path_factory.mktemp("src")
    Trainer(_cfg(tiny_data, project, epochs=1, name="src"), "segment").train()
    return project / "src/weights/last.pt"


def _cfg(tiny_data, project, **kw):
    base = dict(model="yolo11n-seg.yaml", data=str(tiny_data), epochs=2, imgsz=64, batch=4, workers=0,
                device="cpu", project=str(project), name="t", verbose=False, plots=True, nbs=4,
                warmup_epochs=1, mosaic=0.5)
    base.update(kw)
    return get_cfg(base)


def _rows(run):
    with open(Path(run) / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_fitness_definition():
    assert fitness_of(0.5, 0.3, 0.4, 0.2) == pytest.approx(0.1 * 0.5 + 0.9 * 0.3 + 0.1 * 0.4 + 0.9 * 0.2)


def test_train_writes_all_artifacts(tiny_data, tmp_path):
    import cv2
    import yaml

    from yoloseg.checkpoints import load_checkpoint

    tr = Trainer(_cfg(tiny_data, tmp_path), "segment")
    tr.train()
    run = tmp_path / "t"
    assert tr.save_dir.resolve() == run.resolve()
    for f in ("weights/last.pt", "weights/best.pt", "results.csv", "results.png", "args.yaml"):
        assert (run / f).is_file(), f
    rows = _rows(run)
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert list(rows[0].keys()) == EXPECTED_COLUMNS
    for r in rows:
        for k in ("train/box_loss", "train/seg_loss", "train/cls_loss", "train/dfl_loss", "lr/pg0",
                  "val/box_loss", "val/seg_loss", "val/cls_loss", "val/dfl_loss"):
            assert float(r[k]) == float(r[k]) and float(r[k]) >= 0, (k, r[k])
    # the validator's val losses (same forward passes as its metrics) equal a separate loss-only pass
    from yoloseg.engine import train_setup

    want = train_setup.val_losses(tr, tr.ema.ema)
    got = [float(rows[-1][f"val/{n}"]) for n in ("box_loss", "seg_loss", "cls_loss", "dfl_loss")]
    assert got == pytest.approx(want, rel=1e-4, abs=1e-6)
    assert tr.ema.ema.model[-1].with_train_outputs is False  # switched off again after validation
    args = yaml.safe_load((run / "args.yaml").read_text())
    assert args["epochs"] == 2 and args["imgsz"] == 64 and args["optimizer"] == "AdamW"
    assert cv2.imread(str(run / "results.png")) is not None
    # the final evaluation of best.pt draws the validator's pictures into the run folder (plots=True)
    for f in ("val_batch0_labels.jpg", "val_batch0_pred.jpg", "MaskPR_curve.png", "MaskF1_curve.png",
              "confusion_matrix.png", "train_batch0.jpg", "train_batch1.jpg", "labels.jpg"):
        img = cv2.imread(str(run / f))
        assert img is not None and min(img.shape[:2]) > 100, f
    best_f1 = tr.metrics.seg.conf
    assert tr.metrics.plot_conf == (best_f1 if 0 < best_f1 < 0.25 else 0.25)
    assert tr.validator.cfg.plots is False and tr.validator.save_dir is None  # per-epoch validation stays plot-free
    ck = _load(run / "weights/last.pt")  # weights_only=True must work
    assert ck["epoch"] == 1 and ck["train_args"]["epochs"] == 2
    for key in ("optimizer", "ema", "train_model", "rng", "scheduler", "best_fitness", "updates"):
        assert key in ck, key
    assert ck["ema"]["updates"] == ck["updates"] > 0
    model, meta = load_checkpoint(run / "weights/best.pt")
    assert meta["names"] == {0: "ellipse", 1: "triangle", 2: "rectangle"} and model.nc == 3
    # a second run with the same name gets a fresh numbered folder
    tr2 = Trainer(_cfg(tiny_data, tmp_path, epochs=1), "segment")
    tr2.train()
    assert tr2.save_dir.name == "t2"


def test_resume_continues_exactly(tiny_data, tmp_path):
    """2 epochs in one go == 1 epoch, stop, resume from that epoch's checkpoint: same weights, bit for bit."""
    full = Trainer(_cfg(tiny_data, tmp_path, epochs=2, name="full", save_period=1, batch=2, nbs=8), "segment")
    full.train()
    part = tmp_path / "part"
    shutil.copytree(tmp_path / "full", part)
    shutil.copy(part / "weights/epoch1.pt", part / "weights/last.pt")
    resumed = Trainer(get_cfg(dict(resume=str(part / "weights/last.pt"), verbose=False)), "segment")
    resumed.train()
    assert resumed.save_dir.resolve() == part.resolve() and resumed.start_epoch == 1
    a, b = _load(tmp_path / "full/weights/last.pt"), _load(part / "weights/last.pt")
    assert a["epoch"] == b["epoch"] == 1 and a["updates"] == b["updates"]
    for k, v in a["train_model"].items():
        assert torch.equal(v, b["train_model"][k]), k
    for k, v in a["state_dict"].items():  # the EMA weights
        assert torch.equal(v, b["state_dict"][k]), k
    assert [r["train/box_loss"] for r in _rows(tmp_path / "full")] == [r["train/box_loss"] for r in _rows(part)]
    # resuming a finished run is an error, not a silent no-op
    with pytest.raises(ValueError, match="already finished"):
        Trainer(get_cfg(dict(resume=str(part / "weights/last.pt"), verbose=False)), "segment").train()


def test_pretrained_transfer_and_freeze(tiny_data, src_ckpt, tmp_path, capsys):
    src = src_ckpt
    tr = Trainer(_cfg(tiny_data, tmp_path, epochs=1, name="ft", pretrained=str(src), freeze=2, verbose=True),
                 "segment")
    tr.train()
    err = capsys.readouterr().err
    n = len(tr.model.state_dict())
    assert f"Transferred {n}/{n} items" in err
    src_sd = _load(src)["state_dict"]
    after = tr.model.state_dict()
    for k in ("model.0.conv.weight", "model.1.conv.weight", "model.1.bn.weight"):
        assert torch.equal(after[k], src_sd[k]), k  # frozen layers keep the transferred weights
    assert not torch.equal(after["model.2.cv1.conv.weight"], src_sd["model.2.cv1.conv.weight"])


def test_finetune_from_checkpoint_with_other_classes(tiny_data, src_ckpt, tmp_path, capsys):
    tr = Trainer(_cfg(tiny_data, tmp_path, epochs=1, name="ft", single_cls=True, verbose=True,
                      model=str(src_ckpt)), "segment")
    tr.train()
    assert "Transferred" in capsys.readouterr().err
    assert tr.model.nc == 1 and tr.model.names == {0: "item"}


class _EmptyFirst:
    """Loader wrapper that yields an empty batch before the real ones (all samples of a batch unreadable)."""

    def __init__(self, loader):
        self.loader, self.dataset = loader, loader.dataset

    def set_epoch(self, e):
        self.loader.set_epoch(e)

    def close_mosaic(self):
        self.loader.close_mosaic()

    def __len__(self):
        return len(self.loader) + 1

    def __iter__(self):
        yield {"img": torch.zeros(0, 3, 64, 64, dtype=torch.uint8)}
        yield from self.loader


def test_empty_batch_is_skipped(tiny_data, tmp_path):
    class T(Trainer):
        def build_loader(self, split):
            loader = super().build_loader(split)
            return _EmptyFirst(loader) if split == "train" else loader

    tr = T(_cfg(tiny_data, tmp_path, epochs=1), "segment")
    tr.train()
    assert len(_rows(tmp_path / "t")) == 1


def test_time_budget_replans_epochs(tiny_data, tmp_path):
    tr = Trainer(_cfg(tiny_data, tmp_path, epochs=50, time=1e-6), "segment")  # a 3.6 ms budget
    tr.train()
    assert len(_rows(tmp_path / "t")) == 1 and tr.epochs == 1
    assert _load(tmp_path / "t/weights/last.pt")["train_args"]["epochs"] == 1


def test_bad_settings_are_clear_errors(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="freeze"):
        Trainer(_cfg(tiny_data, tmp_path, freeze=40), "segment").train()
    with pytest.raises(FileNotFoundError, match="resume"):
        Trainer(_cfg(tiny_data, tmp_path, resume=str(tmp_path / "nope.pt")), "segment").train()


_CHILD = """
import sys
from yoloseg.cfg import get_cfg
from yoloseg.engine.trainer import Trainer
over = dict(a.split("=", 1) for a in sys.argv[1:])
Trainer(get_cfg(over), "segment").train()
"""


@pytest.mark.slow
def test_resume_after_sigkill(tiny_data, tmp_path):
    """kill -9 mid-run once the first checkpoint exists, resume, and finish with exactly `epochs` epochs."""
    epochs = 4
    args = [f"data={tiny_data}", f"epochs={epochs}", "imgsz=64", "batch=2", "workers=0", "device=cpu",
            f"project={tmp_path}", "name=k", "verbose=False", "nbs=4", "warmup_epochs=1", "plots=False"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # cwd=tmp_path: `python -c` puts the working directory first on sys.path, and a source checkout
    # there would shadow the installed package (and its compiled kernels).
    log = open(tmp_path / "child.log", "wb")  # a file, not a pipe: a full pipe would block the child
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, *args], env=env, stderr=log, stdout=log, cwd=tmp_path)
    last = tmp_path / "k/weights/last.pt"
    deadline = time.time() + 300
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert last.exists(), (tmp_path / "child.log").read_text()[-2000:] if proc.poll() is not None else "timeout"
    time.sleep(0.2)  # inside the second epoch
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    log.close()
    done = _load(last)["epoch"]
    assert done < epochs - 1, "the run finished before it could be killed"
    out = subprocess.run([sys.executable, "-c", _CHILD, f"resume={last}", "verbose=False"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = _rows(tmp_path / "k")
    assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1))
    assert _load(last)["epoch"] == epochs - 1
    assert not (tmp_path / "k2").exists()  # same run folder


def test_task_defines_loss_columns_metric_columns_and_fitness(tiny_data, tmp_path):
    """The trainer asks the task: its loss names name the loss columns, its metrics object's keys and
    fitness name the metric columns and pick best.pt (a plugin task with metrics of its own)."""
    import dataclasses

    from yoloseg.engine.validator import Validator
    from yoloseg.tasks import get_task

    class OwnMetrics:
        keys = ["metrics/score"]

        def __init__(self, epoch):
            self.results_dict = {"metrics/score": 0.1 * epoch, "fitness": -epoch}  # best = first epoch
            self.fitness = -epoch
            self.box = self.seg = None
            self.loss = [0.5, 0.25, 0.125, 0.0625]

    calls = []

    class OwnValidator(Validator):
        def __call__(self, model=None, trainer=None):
            calls.append(1)
            return OwnMetrics(len(calls))

    seg = get_task("segment")
    task = dataclasses.replace(seg, name="owntask", loss_names=("a_loss", "b_loss", "c_loss", "d_loss"),
                               validator=OwnValidator)
    tr = Trainer(_cfg(tiny_data, tmp_path, epochs=2, plots=False), task)
    tr.train()
    rows = _rows(tmp_path / "t")
    cols = list(rows[0].keys())
    assert [c for c in cols if c.startswith("train/")] == [f"train/{n}_loss" for n in "abcd"]
    assert [c for c in cols if c.startswith("val/")] == [f"val/{n}_loss" for n in "abcd"]
    assert [c for c in cols if c.startswith("metrics/")] == ["metrics/score"]
    assert [float(r["metrics/score"]) for r in rows] == pytest.approx([0.1, 0.2])
    assert float(rows[0]["val/b_loss"]) == 0.25
    ck = _load(tmp_path / "t" / "weights/last.pt")
    assert ck["best_fitness"] == -1  # epoch 1 had the higher fitness


def test_multi_scale_varies_the_input_size_reproducibly(tiny_data, tmp_path):
    tr = Trainer(_cfg(tiny_data, tmp_path, epochs=1, multi_scale=0.5, imgsz=64), "segment")
    tr.train()  # a whole epoch with changing sizes
    assert float(_rows(tmp_path / "t")[0]["train/seg_loss"]) > 0
    sizes = set()
    for i in range(12):
        out = tr.rescale_batch({"img": torch.zeros(2, 3, 64, 64)}, 0, i)["img"]
        assert out.shape[-1] % 32 == 0 and 32 <= out.shape[-1] <= 96
        sizes.add(out.shape[-1])
        again = tr.rescale_batch({"img": torch.zeros(2, 3, 64, 64)}, 0, i)["img"]
        assert again.shape == out.shape  # the same (seed, epoch, batch) gives the same size
    assert len(sizes) >= 2
    tr.args.multi_scale = 0.0
    assert tr.rescale_batch({"img": torch.zeros(1, 3, 64, 64)}, 0, 0)["img"].shape[-1] == 64  # off: unchanged


def test_rect_training_runs_without_mosaic_or_shuffling(tiny_data, tmp_path, capsys):
    tr = Trainer(_cfg(tiny_data, tmp_path, epochs=1, rect=True, verbose=True), "segment")
    tr.train()
    ds = tr.train_loader.dataset
    assert ds.rect and ds.augment and not ds.mosaic_enabled
    assert [int(r["epoch"]) for r in _rows(tmp_path / "t")] == [1]
    captured = capsys.readouterr()
    assert "rectangular training batches" in captured.out + captured.err
