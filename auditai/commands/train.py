"""`auditai train`: certified training of a model's head on latent codes (paper §2.3).

    auditai train --model M --data D --direction pose [--direction light] --eps 0.5 \
        --epochs 30 --out trained.auditai

Loads the model and the data (encoding inputs with the model's encoder), trains the head with
`auditai.train.fit` on every named set at once, and saves a safe model file with the same
encoder, decoder, directions and dims and the new head. Prints the verified error at the target
ε per epoch and, at the end, for the original and the trained head side by side.
"""

from __future__ import annotations

import argparse
import copy
import os

from auditai import names
from auditai.errors import InputError

HELP = "certified training of the head on latent sets (CROWN-IBP through the latent space)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="auditai model file, or package.module:attr")
    parser.add_argument("--data", required=True, help="training data: .pt/.npz/.safetensors, image folder, or package.module:attr")
    parser.add_argument("--direction", action="append", default=[], metavar="NAME",
                        help="a named direction (vector or basis) of the model; repeat for several unit tests")
    parser.add_argument("--dims", action="append", default=[], metavar="NAME|I,J",
                        help="a named dims entry of the model, or indices like 3,5; repeatable")
    parser.add_argument("--norm", default="inf", help="norm of the δ-ball for dims/basis sets: inf (default), 2 or 1")
    parser.add_argument("--eps", type=float, required=True, help="target radius ε of every set")
    parser.add_argument("--epochs", type=int, default=30, help="training epochs (default 30)")
    parser.add_argument("--out", required=True, help="where to write the trained model (safe auditai format)")
    parser.add_argument("--method", default="crown-ibp", choices=names.BOUND_METHODS,
                        help="bound method of the training loss (default crown-ibp)")
    parser.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate (default 5e-4, the paper's)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=None,
                        help="epochs of natural training before ε ramps up (default 5, or a quarter of the epochs if fewer)")
    parser.add_argument("--ramp", type=int, default=None, help="epochs over which ε ramps to its target (default: half the rest)")
    parser.add_argument("--schedule", default="smoothed", choices=["linear", "smoothed"], help="shape of the ε ramp")
    parser.add_argument("--kappa-end", type=float, default=0.0,
                        help="final weight χ of the natural loss (starts at 1; default 0)")
    parser.add_argument("--reinit", action="store_true", help="re-initialise the head instead of fine-tuning it")
    parser.add_argument("--val-data", default=None, help="data for the per-epoch verified error (default: the training data)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", default=None, help="checkpoint file written after each epoch")
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint if it exists")
    parser.add_argument("--checkpoint-every", type=int, default=0, metavar="STEPS",
                        help="under torchrun: also checkpoint every STEPS optimizer steps (default: epochs only)")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch lines or progress bar")
    parser.add_argument("--trust-pickle", action="store_true", help="allow a torch.save pickle model (can run code)")


def _sets(model, args) -> dict:
    from auditai.latent import Basis, Dims, Direction

    sets: dict = {}
    for name in args.direction:
        if name not in model.directions:
            raise InputError(f"--direction {name!r}: the model has directions {sorted(model.directions)}")
        v = model.directions[name]
        sets[name] = Direction(v.reshape(-1), name) if (v.dim() == 1 or v.shape[1] == 1) else Basis(v, args.norm, name)
    for spec in args.dims:
        if spec in model.dims:
            sets[spec] = Dims(model.dims[spec], args.norm)
            continue
        try:
            idx = [int(s) for s in spec.replace(" ", "").split(",") if s]
        except ValueError:
            raise InputError(f"--dims {spec!r}: not a named dims entry ({sorted(model.dims)}) nor indices like 3,5") from None
        if not idx:
            raise InputError(f"--dims {spec!r}: no index given")
        bad = [i for i in idx if not 0 <= i < model.latent_dim]
        if bad:
            raise InputError(f"--dims {spec!r}: index {bad} out of range for codes of d={model.latent_dim}")
        sets[f"dims {spec}"] = Dims(idx, args.norm)
    if not sets:
        raise InputError("name at least one set to train on: --direction NAME or --dims NAME|I,J")
    return sets


def _reinit(head, seed: int) -> None:
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in head.modules():
            if hasattr(m, "reset_parameters") and m is not head:
                m.reset_parameters()


def run(args: argparse.Namespace) -> int:
    import torch

    from auditai.data import load_data
    from auditai.distributed.group import under_torchrun
    from auditai.errors import AuditaiError
    from auditai.model import AuditModel, load_model, save_model
    from auditai.train import fit, verified_error

    if args.epochs < 1:
        raise AuditaiError(f"--epochs must be >= 1, got {args.epochs}")
    if not args.eps >= 0:
        raise AuditaiError(f"--eps must be >= 0, got {args.eps}")
    model = load_model(args.model, trust_pickle=args.trust_pickle)
    data = load_data(args.data, model)
    val = load_data(args.val_data, model) if args.val_data else data
    warmup = args.warmup if args.warmup is not None else min(5, args.epochs // 4)
    log = None if args.quiet else print
    try:
        sets = _sets(model, args)
        head = copy.deepcopy(model.head)
        if args.reinit:
            _reinit(head, args.seed)
        before = {n: verified_error(model.head, val.z, val.y, k, args.eps, args.method)
                  for n, k in sets.items()} if int(os.environ.get("RANK", "0")) == 0 else {}
        trainer, extra = fit, {}
        if under_torchrun():  # DDP over the ranks; restarts resume from the checkpoint
            from auditai.distributed.train import fit_ddp as trainer

            extra = {"checkpoint_every": args.checkpoint_every}
        result = trainer(head, data.z, data.y, sets, args.eps, args.epochs, method=args.method, lr=args.lr,
                     batch_size=args.batch_size, warmup=warmup, ramp=args.ramp, schedule=args.schedule,
                     kappa_end=args.kappa_end, seed=args.seed, eval_data=(val.z, val.y),
                     eval_limit=None, checkpoint=args.checkpoint, resume=args.resume,
                     progress=not args.quiet, log=log, **extra)
    except (ValueError, TypeError) as e:
        if isinstance(e, AuditaiError):
            raise
        raise AuditaiError(str(e)) from None
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # rank 0 saves the model
    head.eval()
    after = result.final.get("verified_error", {})
    meta = dict(model.metadata)
    meta["certified_training"] = {
        "source_model": model.content_hash, "sets": {n: k.describe() for n, k in sets.items()},
        "eps": args.eps, "epochs": args.epochs, "method": args.method, "lr": args.lr,
        "warmup": warmup, "schedule": args.schedule, "kappa_end": args.kappa_end, "seed": args.seed,
        "verified_error_before": before, "verified_error_after": after,
    }
    directions = {n: (v, model.direction_descriptions.get(n, "")) for n, v in model.directions.items()}
    new = AuditModel(head, encoder=model.encoder, decoder=model.decoder, directions=directions,
                     dims=model.dims, class_names=model.class_names, metadata=meta,
                     input_shape=model.input_shape, latent_dim=model.latent_dim)
    example = torch.zeros(2, *model.input_shape) if (model.encoder is not None and model.input_shape) else None
    digest = save_model(args.out, new, example_input=example)
    width = max(len(n) for n in sets)
    print(f"verified error at ε={args.eps:g} ({args.method}, {len(val.y)} samples):")
    for n in sets:
        print(f"  {n:<{width}}  before {before[n]:.3f}  after {after.get(n, float('nan')):.3f}")
    print(f"wrote {args.out} (sha256 {digest[:12]}…; same encoder, decoder and directions, new head)")
    return 0
