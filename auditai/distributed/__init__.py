"""Scale-out on torchrun: sharded, resumable verification and distributed certified training.

- `shard`: the chunk plan, the run folder's manifest, atomic chunk files and the merge (pure
  file and data logic, no process group).
- `group`: the torch.distributed process group (gloo on CPU, NCCL on GPUs) or one process.
- `run`: `auditai verify SUITE --out DIR` (under torchrun or not) and `auditai merge DIR`.
- `train`: certified training under DistributedDataParallel with atomic step checkpoints.

Nothing here imports pytest; the plugin reads the run folder's `results.json`.
"""
