"""The `full` profile against the official IC15 config (github wenwenyu/TCM, configs/textdet/dbnet/
clip_db_r50_fpnc_prompt_gen_vis_1200e_ft_gen_ic15_adam_taiji.py and its bases): per-GPU batch under DDP."""
import json
import os
import subprocess
import sys
import textwrap

DDP_SCRIPT = textwrap.dedent("""
    import json, sys, torch.distributed as dist
    import tcm_kit.train as T
    seen, real = [], T.train_step
    def spy(model, forward, optimizer, batch, device, amp):
        seen.append(list(batch["path"]))
        return real(model, forward, optimizer, batch, device, amp)
    T.train_step = spy
    cfg = T.TrainConfig.for_profile("smoke", steps=2, batch_size=3)
    T.fit(cfg, sys.argv[1], progress=False)
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, seen)
    if dist.get_rank() == 0:
        print("SEEN " + json.dumps(everyone))
    T.exit_process(0)
""")


def test_batch_size_is_per_process_under_two_rank_ddp(tmp_path):
    """batch_size 3 on 2 gloo ranks: each rank trains on 3 images per step, the two ranks on different images
    (a global batch of 6); the kit used to split batch_size across the ranks (and refuse 3 on 2)."""
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), str(tmp_path / "run")], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("SEEN "))[5:])
    assert len(seen) == 2 and all(len(rank) == 2 for rank in seen)  # 2 ranks x 2 steps
    assert all(len(batch) == 3 for rank in seen for batch in rank)
    for step in range(2):
        assert not set(seen[0][step]) & set(seen[1][step])  # each rank its own part of the global batch
