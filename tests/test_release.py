"""The released embedded CLIP: load_clip("embedded") loads the shipped fp16 file, checks its sha256 and never
trains; export_release writes such a release from a pre-training checkpoint; a run's cache key sees the CLIP."""
import json
import shutil
import subprocess
import sys

import pytest
import torch

from tcm_kit import clip, pretrain
from tcm_kit.clip import ClipWeightsError
from tcm_kit.pretrain import PretrainConfig
from tcm_kit.release import export_release

TINY = dict(steps=3, batch_size=4, sizes=(64,), warmup_steps=1)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    out = tmp_path_factory.mktemp("pre") / "tiny.pt"
    return pretrain.pretrain(PretrainConfig.for_profile("smoke", **TINY), out, progress=False, workers=0)


def test_the_shipped_release_loads_without_training_and_matches_its_record(monkeypatch):
    monkeypatch.setattr(pretrain, "_run", lambda *a, **k: pytest.fail("load_clip must never pre-train"))
    info = clip.released_clip_info()
    assert clip.file_sha256(clip.RELEASED_CLIP) == info["sha256"]
    assert clip.RELEASED_CLIP.stat().st_size == info["size_bytes"] <= 30 * 2**20
    model, _, tok = clip.load_clip("embedded")
    stored = torch.load(clip.RELEASED_CLIP, map_location="cpu", weights_only=True)["state_dict"]
    assert {v.dtype for v in stored.values() if v.is_floating_point()} == {torch.float16}
    sd = model.state_dict()
    assert all(p.dtype == torch.float32 for p in model.parameters())  # fp16 storage, fp32 arithmetic
    assert all(torch.equal(sd[k].to(stored[k].dtype), stored[k]) for k in stored)
    assert info["pretrain_config"]["profile"] == "release" and info["git_commit"]
    assert tok(["text"]).shape == (1, model.context_length)


def _copy_release(tmp_path, monkeypatch):
    pt, meta = tmp_path / "embedded-clip.pt", tmp_path / "embedded-clip.json"
    shutil.copy(clip.RELEASED_CLIP, pt)
    shutil.copy(clip.RELEASED_CLIP_META, meta)
    monkeypatch.setattr(clip, "RELEASED_CLIP", pt)
    monkeypatch.setattr(clip, "RELEASED_CLIP_META", meta)
    return pt, meta


def test_a_damaged_or_missing_release_is_refused_by_name(tmp_path, monkeypatch):
    pt, meta = _copy_release(tmp_path, monkeypatch)
    clip.load_clip("embedded")  # the copy is fine
    data = bytearray(pt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pt.write_bytes(bytes(data))
    with pytest.raises(ClipWeightsError, match="sha256") as e:
        clip.load_clip("embedded")
    assert str(pt) in str(e.value)
    pt.unlink()
    with pytest.raises(ClipWeightsError, match="missing"):
        clip.load_clip("embedded")
    meta.write_text('{"sha256": ')
    with pytest.raises(ClipWeightsError, match=r"embedded-clip.json:1"):
        clip.load_clip("embedded")


def test_export_writes_an_fp16_hashed_release_with_its_record(tmp_path, tiny_ckpt):
    out = tmp_path / "rel" / "embedded-clip.pt"
    rec = export_release(tiny_ckpt, out, probe_n=4, probe_sizes=((64, 64), (96, 64)), progress=False)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta == json.loads(json.dumps(rec, default=str))
    assert meta["sha256"] == clip.file_sha256(out) and meta["dtype"] == "float16"
    assert meta["pretrain_config"]["steps"] == TINY["steps"] and meta["amp"] in ("fp32", "bf16")
    assert [r["size"] for r in meta["probe"]["rows"]] == ["64x64", "96x64"]
    log = (out.parent / "embedded-clip-log.csv").read_text().splitlines()
    assert log[0].startswith("step,loss") and len(log) == 1 + TINY["steps"]
    a, _, _ = clip.load_clip(out)
    b, _, _ = clip.load_clip(tiny_ckpt)
    assert all(torch.allclose(x, y, atol=1e-2, rtol=1e-2) for x, y in zip(a.state_dict().values(),
                                                                          b.state_dict().values()))
    with pytest.raises(ClipWeightsError, match="overwrite its own source"):
        export_release(out, out, probe_n=0)


def test_a_runs_cache_key_follows_the_clip_weights(tmp_path, tiny_ckpt):
    from tcm_kit.train import TrainConfig, run_hash

    other = tmp_path / "other.pt"
    shutil.copy(tiny_ckpt, other)
    a = TrainConfig.for_profile("smoke", clip_weights=str(other))
    h0 = run_hash(a)
    assert run_hash(a) == h0  # stable
    ck = torch.load(other, map_location="cpu", weights_only=True)
    ck["state_dict"]["logit_scale"] = ck["state_dict"]["logit_scale"] + 1
    torch.save(ck, other)  # same path, new weights
    assert run_hash(a) != h0
    emb = TrainConfig.for_profile("smoke")
    assert run_hash(emb) != run_hash(TrainConfig.for_profile("smoke", clip_weights=str(tiny_ckpt)))


def test_loading_clip_imports_no_pretraining():
    code = "import sys, tcm_kit.clip; print(any(m.startswith('tcm_kit.pretrain') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
