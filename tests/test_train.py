"""Training engine: nested few-shot subsets, deterministic batches, resume == uninterrupted, DDP ranks agree."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from tcm_kit import train as T
from tcm_kit.train import TrainConfig, epoch_batches, few_shot_indices, lr_factor


def smoke(**kw):
    return TrainConfig.for_profile("smoke", **kw)


def test_few_shot_subsets_are_nested_and_repeatable():
    small, big = few_shot_indices(200, 0.1, seed=3), few_shot_indices(200, 0.25, seed=3)
    assert len(small) == 20 and len(big) == 50
    assert set(small) <= set(big)
    assert np.array_equal(small, few_shot_indices(200, 0.1, seed=3))
    assert not np.array_equal(small, few_shot_indices(200, 0.1, seed=4))
    assert len(few_shot_indices(50, 0.01, seed=0)) == 1  # never empty
    with pytest.raises(T.TrainConfigError, match="shot"):
        few_shot_indices(10, 0.0, seed=0)


def test_epoch_batches_cover_the_set_and_fill_tiny_sets():
    b = epoch_batches(10, 4, seed=0, epoch=2)
    assert len(b) == 2 and all(len(x) == 4 for x in b) and len(set(sum(b, []))) == 8
    assert b == epoch_batches(10, 4, seed=0, epoch=2) and b != epoch_batches(10, 4, seed=0, epoch=3)
    tiny = epoch_batches(3, 8, seed=0, epoch=0)  # fewer images than a batch: one batch, repeats allowed
    assert len(tiny) == 1 and len(tiny[0]) == 8 and set(tiny[0]) == {0, 1, 2}


def test_lr_warms_up_then_decays_to_the_floor():
    cfg = smoke(optim=dict(steps=100, warmup_steps=10, lr=1e-3))
    f = [lr_factor(s, cfg) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:])) and f[-1] < 0.05
    assert lr_factor(10_000, cfg) == pytest.approx(cfg.optim.min_lr / cfg.optim.lr)


def test_profiles_differ_and_unknown_is_refused():
    assert smoke().optim.steps < TrainConfig.for_profile("cpu").optim.steps < TrainConfig.for_profile("full").optim.steps
    with pytest.raises(T.TrainConfigError, match="profile"):
        TrainConfig.for_profile("laptop")


def _weights(path):
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def test_train_writes_result_and_does_not_retrain(tmp_path):
    cfg = smoke()
    res = T.train(cfg, tmp_path / "run", progress=False)
    assert 0.0 <= res["hmean"] <= 1.0 and res["n_test"] == cfg.data.num_test and res["steps"] == cfg.optim.steps
    from tcm_kit.utils import cpu_name

    assert res["cpu"] == cpu_name() and res["amp"] in ("fp32", "bf16")  # where and how it trained
    assert res["box_thresh"] in cfg.evaluation.box_thresholds
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert len(log) == cfg.optim.steps + 1 and log[0].startswith("step,lr,loss")
    again = T.train(cfg, tmp_path / "run", progress=False)
    assert again == res and (tmp_path / "run" / "log.csv").read_text().splitlines() == log
    with pytest.raises(T.CheckpointError, match="another config"):
        T.train(smoke(seed=1), tmp_path / "run", progress=False)


def test_evaluation_with_a_picked_threshold_skips_the_validation_split(tmp_path, monkeypatch):
    cfg = smoke()
    res = T.train(cfg, tmp_path / "run", progress=False)
    model, _, _ = T.load_run(tmp_path / "run")
    seen = []
    predict = T.predict_folder
    monkeypatch.setattr(T, "predict_folder", lambda m, root, *a, **k: seen.append(root) or predict(m, root, *a, **k))
    again = T.evaluate_run(model, cfg, progress=False, box_thresh=res["box_thresh"])
    assert seen == [T.split_dir(cfg, "test", progress=False)]
    assert {k: again[k] for k in ("precision", "recall", "hmean", "box_thresh")} == \
        {k: res[k] for k in ("precision", "recall", "hmean", "box_thresh")}


def test_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    cfg = smoke(optim=dict(steps=4), ckpt_every=2)
    T.fit(cfg, tmp_path / "a", progress=False)

    real_save = T.save_checkpoint

    def save_then_die(path, model, optimizer, scheduler, step, cfg_, device=None):
        real_save(path, model, optimizer, scheduler, step, cfg_, device)
        raise KeyboardInterrupt(f"killed after step {step}")

    monkeypatch.setattr(T, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt, match="after step 2"):
        T.fit(cfg, tmp_path / "b", progress=False)
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=False)["step"] == 2
    monkeypatch.setattr(T, "save_checkpoint", real_save)
    T.fit(cfg, tmp_path / "b", progress=False)
    a, b = _weights(tmp_path / "a" / "last.pt"), _weights(tmp_path / "b" / "last.pt")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed run diverged from the uninterrupted one"
    assert len((tmp_path / "b" / "log.csv").read_text().splitlines()) == cfg.optim.steps + 1


def test_a_run_killed_after_its_last_step_evaluates_without_training_again(tmp_path, monkeypatch):
    cfg = smoke(optim=dict(steps=4), ckpt_every=2)
    first = T.train(cfg, tmp_path / "r", progress=False)
    ck = torch.load(tmp_path / "r" / "last.pt", weights_only=False)
    assert ck["step"] == 4 and "optimizer" not in ck and "scheduler" not in ck  # nothing trains on from it
    weights = _weights(tmp_path / "r" / "last.pt")
    (tmp_path / "r" / "result.json").unlink()  # as if killed during the evaluation
    monkeypatch.setattr(T, "train_step", lambda *a, **k: pytest.fail("a finished run trained again"))
    again = T.train(cfg, tmp_path / "r", progress=False)
    assert again["hmean"] == first["hmean"] and again["per_image"] == first["per_image"]
    after = _weights(tmp_path / "r" / "last.pt")
    assert all(torch.equal(weights[k], after[k]) for k in weights)


def test_corrupt_checkpoint_is_named(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(T.CheckpointError, match="last.pt: cannot read checkpoint"):
        T.fit(smoke(), tmp_path / "r", progress=False)


DDP_SCRIPT = textwrap.dedent("""
    import sys, torch, torch.distributed as dist
    from tcm_kit.train import TrainConfig, exit_process, fit

    def main():
        cfg = TrainConfig.for_profile("smoke", optim=dict(steps=2, batch_size=2))
        model, _ = fit(cfg, sys.argv[1], progress=False)
        flat = torch.cat([p.detach().flatten() for p in model.parameters()])
        everyone = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
        dist.all_gather(everyone, flat)
        if dist.get_rank() == 0:
            same = all(torch.equal(everyone[0], x) for x in everyone[1:])
            print("RANKS_IDENTICAL" if same else "RANKS_DIFFER")
        exit_process(0)  # destroys the process group, skips the teardown gloo can abort

    if __name__ == "__main__":  # the synthetic-data writer's spawned workers re-import this file
        main()
""")


def test_torchrun_two_cpu_processes_keep_identical_weights(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), str(tmp_path / "run")], capture_output=True, text=True,
                          timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RANKS_IDENTICAL" in proc.stdout
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert len(log) == 3  # rank 0 logs each of the 2 steps once


@pytest.mark.parametrize("detector,mult", [("dbnet", 0.1), ("tcm-dbnet", 0.1), ("dbnet-scratch", 1.0)])
def test_image_encoder_gets_its_own_learning_rate(detector, mult):
    from tcm_kit.clip import create_clip
    from tcm_kit.detector import build_detector

    cfg = smoke(detector=detector, optim=dict(lr=1e-3))
    model = build_detector(detector, create_clip("TCM-RN-tiny", seed=0), head=cfg.head, tcm=cfg.tcm)
    enc, rest = T.param_groups(model, cfg)
    assert enc["lr"] == pytest.approx(1e-3 * mult) and rest["lr"] == pytest.approx(1e-3)
    encoder_ids = {id(p) for p in model.backbone.image_encoder().parameters()}
    assert enc["params"] and {id(p) for p in enc["params"]} <= encoder_ids
    assert not encoder_ids & {id(p) for p in rest["params"]}
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(enc["params"]) + len(rest["params"]) == len(trainable)


def test_validation_curve_leaves_training_unchanged_and_resumes(tmp_path, monkeypatch):
    cfg = smoke(optim=dict(steps=4), ckpt_every=2, evaluation=dict(val_every=0))
    curved = cfg.updated(evaluation=dict(val_every=2))
    T.fit(cfg, tmp_path / "plain", progress=False)
    T.fit(curved, tmp_path / "a", progress=False)
    a, plain = _weights(tmp_path / "a" / "last.pt"), _weights(tmp_path / "plain" / "last.pt")
    assert all(torch.equal(a[k], plain[k]) for k in a), "the validation evaluations changed the training"
    assert not (tmp_path / "plain" / "val_curve.csv").exists()
    rows = T.read_val_curve(tmp_path / "a")
    assert [r["step"] for r in rows] == [2, 4]
    assert all(0 <= r["hmean"] <= 1 and r["box_thresh"] in curved.evaluation.box_thresholds for r in rows)

    real_save = T.save_checkpoint  # killed after step 2's checkpoint, then a stale row of step 3 on disk

    def save_then_die(path, model, optimizer, scheduler, step, cfg_, device=None):
        real_save(path, model, optimizer, scheduler, step, cfg_, device)
        raise KeyboardInterrupt(f"killed after step {step}")

    monkeypatch.setattr(T, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        T.fit(curved, tmp_path / "b", progress=False)
    with open(tmp_path / "b" / "val_curve.csv", "a") as f:
        f.write("3,0.5,0.5,0.5,0.3\n")
    monkeypatch.setattr(T, "save_checkpoint", real_save)
    T.fit(curved, tmp_path / "b", progress=False)
    assert T.read_val_curve(tmp_path / "b") == rows
    with pytest.raises(T.TrainConfigError, match="val_every"):
        cfg.updated(evaluation=dict(val_every=-1))


def test_a_validation_curve_changes_no_result(tmp_path):
    plain = smoke(optim=dict(steps=4), evaluation=dict(val_every=0))
    a = T.train(plain, tmp_path / "plain", progress=False)
    b = T.train(plain.updated(evaluation=dict(val_every=2)), tmp_path / "curved", progress=False)
    keys = ("precision", "recall", "hmean", "box_thresh", "val_hmean", "per_image")
    assert {k: a[k] for k in keys} == {k: b[k] for k in keys}  # the last curve point stands in for the val pass
    assert T.read_val_curve(tmp_path / "curved")[-1]["hmean"] == b["val_hmean"]
