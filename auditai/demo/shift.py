"""Domain shift in the demo: a shifted test split per data set and the paper's Table 4 layout.

The paper's domain-shift study (§4.2, Table 4) trains on CheXpert and deploys on NIH images,
comparing precision, recall and accuracy of the normally trained model, the latent-certified
one (AuditAI) and a pixel-certified one. Here, per demo data set, a test split that no model
saw is drawn from a shifted distribution, offline like the rest:

- shapes: new seed; scale in [0.4, 0.9] (training [0.5, 1]), brightness in [0.3, 0.8]
  (training [0.4, 1]), positions from Beta(0.6, 0.6) (towards the canvas edges; training
  uniform), rotation as in training;
- Fashion-MNIST: the *test* file (t10k: no model saw it), rotated by up to ±25°, contrast
  changed by a gamma in [0.6, 1.6], brightness scaled by [0.5, 0.9], placed at new offsets
  (the digits fallback: the build's held-out images, shifted the same way).

Three models are compared on it: the normal head (3 seeds: the audited one and two more,
cheap), the latent-certified head (`auditai.train.fit`; the audited one, 1 seed: it costs
most of a build), and a pixel-certified baseline (`auditai.train.fit_pixel`, CROWN-IBP on ℓ∞
pixel balls): a *small* CNN trained from scratch on 3,000 images for 5 epochs at ε = 0.002
(the demo's time budget; the paper's pixel baseline is a full model), 1 seed. Their
precision/recall are macro-averaged (`auditai.deploy_report`). Coverage and in-range accuracy
come from the deployment report of each audited head's spec-sheet; for the pixel model, whose
unit test is a pixel ball, from the same §2.4 range on pixels: per pixel
[μ − ε − σ, μ + ε + σ] over the training images, an input inside when every pixel is.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from auditai.errors import DataError

SHIFT_SEED = 7919  # added to the demo seed: a split no model saw
N_SHIFT = {"full": 2000, "tiny": 128}
NORMAL_SEEDS = {"full": 3, "tiny": 2}
PIXEL = {"full": {"n_train": 3000, "epochs": 5, "eps": 0.002, "lr": 2e-3, "kappa_end": 0.5},
         "tiny": {"n_train": 128, "epochs": 1, "eps": 0.002, "lr": 2e-3, "kappa_end": 0.5}}
HEAD_NAMES = {"normal": "normal head", "certified": "latent-certified head (AuditAI)",
              "pixel": "pixel-certified baseline (small CNN)"}
#: the paper's Table 4 (CheXpert → NIH), for the closing comparison
PAPER_TABLE4 = "paper Table 4 (CheXpert → NIH): the latent-certified model about 5 % above the pixel-certified one"


# ----------------------------------------------------------------------------- data
def rotate(x: np.ndarray, degrees: np.ndarray) -> np.ndarray:
    """Rotate N×1×H×W images about their centre by per-image angles (bilinear, zero fill)."""
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    a = torch.from_numpy(np.deg2rad(np.asarray(degrees, dtype=np.float64))).float()
    c, s = torch.cos(a), torch.sin(a)
    theta = torch.stack([torch.stack([c, -s, torch.zeros_like(c)], 1),
                         torch.stack([s, c, torch.zeros_like(c)], 1)], 1)
    grid = F.affine_grid(theta, list(t.shape), align_corners=False)
    return F.grid_sample(t, grid, mode="bilinear", padding_mode="zeros", align_corners=False).numpy()


def shapes_shifted(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Shapes from the shifted factor distribution of the module doc: (x, labels, description)."""
    from auditai.demo import shapes

    rng = np.random.default_rng(seed)
    f = {"shape": rng.integers(0, len(shapes.SHAPES), size=n).astype(np.int64),
         "scale": rng.uniform(0.4, 0.9, size=n), "rotation": rng.uniform(*shapes.ROTATION_RANGE, size=n),
         "x": rng.beta(0.6, 0.6, size=n), "y": rng.beta(0.6, 0.6, size=n),
         "brightness": rng.uniform(0.3, 0.8, size=n)}
    return (shapes.render(f), f["shape"],
            "new seed; scale U[0.4, 0.9] (train U[0.5, 1]), brightness U[0.3, 0.8] (train U[0.4, 1]), "
            "x, y ~ Beta(0.6, 0.6) (train uniform)")


def fashion_shifted(n: int, seed: int, fashion_dir: str | None, fallback: tuple[np.ndarray, np.ndarray] | None,
                    log: Callable[[str], None] = print) -> tuple[np.ndarray, np.ndarray, str]:
    """Fashion-MNIST's test file, rotated, contrast- and brightness-shifted (module doc)."""
    from auditai.demo import fashion

    try:
        x28, y = fashion.load_fashion_mnist(fashion_dir, "test", limit=n)
        what = "Fashion-MNIST test file (t10k)"
    except DataError:
        if fallback is None:
            raise
        x28, y = fallback
        what = "the build's held-out digits"
    rng = np.random.default_rng(seed)
    x, _ = fashion.to_canvas(x28, 32, seed=seed)
    m = x.shape[0]
    x = rotate(x, rng.uniform(-25.0, 25.0, size=m))
    gamma = rng.uniform(0.6, 1.6, size=m)[:, None, None, None]
    bright = rng.uniform(0.5, 0.9, size=m)[:, None, None, None]
    x = np.clip(np.clip(x, 0.0, 1.0) ** gamma * bright, 0.0, 1.0).astype(np.float32)
    return x, np.asarray(y, dtype=np.int64), f"{what}; rotation U[−25°, 25°], gamma U[0.6, 1.6], brightness ×U[0.5, 0.9]"


# ----------------------------------------------------------------------------- models
def pixel_net(num_classes: int, seed: int) -> tuple[nn.Sequential, nn.Sequential]:
    """The small pixel-space CNN (encoder, head) of the baseline, initialised from `seed`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        enc = nn.Sequential(nn.Conv2d(1, 8, 4, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 4, 2, 1), nn.ReLU(),
                            nn.Flatten(), nn.Linear(16 * 8 * 8, 64), nn.ReLU())
        head = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, num_classes))
    return enc, head


def shift_key(weights_key: str, size: str) -> str:
    """Cache key of the extra heads: the build's weights key, this code, the training code."""
    here = Path(__file__).resolve()
    h = hashlib.sha256(json.dumps([weights_key, size, PIXEL[size], NORMAL_SEEDS[size],
                                   torch.__version__.split("+")[0]]).encode())
    for p in (here, here.parent / "heads.py", here.parent.parent / "train.py"):
        h.update(p.read_bytes())
    return h.hexdigest()[:20]


@torch.no_grad()
def _predict(net: nn.Module, x: torch.Tensor) -> np.ndarray:
    net.eval()
    return torch.cat([net(x[i:i + 1024]).argmax(1) for i in range(0, x.shape[0], 1024)]).numpy()


def pixel_coverage(x_train: np.ndarray, x: np.ndarray, eps: float) -> np.ndarray:
    """Bool N: every pixel of x inside [μ − ε − σ, μ + ε + σ] over the training images (§2.4)."""
    a = x_train.reshape(x_train.shape[0], -1).astype(np.float64)
    mu, sd = a.mean(0), a.std(0)
    b = x.reshape(x.shape[0], -1)
    return ((b >= mu - eps - sd) & (b <= mu + eps + sd)).all(1)


def build_shift(b: Any, data: dict, out: Path, cache: Path, fashion_dir: str | None,
                log: Callable[[str], None] = print) -> dict[str, Any]:
    """The shifted split, the extra heads (cached) and their metrics on it; a JSON-able dict.

    `b` is the `DemoBuild`, `data` its `load_data` dict (training images for the baseline).
    """
    from auditai.demo.build import cache_key
    from auditai.demo.heads import make_head, train_head
    from auditai.demo.vae import encode_mean
    from auditai.deploy_report import subset_metrics
    from auditai.train import fit_pixel

    s = b.settings
    t0 = time.perf_counter()
    n = N_SHIFT[s.size]
    if s.dataset == "shapes":
        x, y, desc = shapes_shifted(n, s.seed + SHIFT_SEED)
    else:
        fb = (data["x_test"][:, :, 4:28, 4:28], data["y_test"]) if data["source"].startswith("scikit") else None
        x, y, desc = fashion_shifted(n, s.seed + SHIFT_SEED, fashion_dir, fb, log)
    path = out / f"{s.dataset}_shifted.npz"
    np.savez_compressed(path, x=x, y=y)
    times = {"data": time.perf_counter() - t0}

    k = len(data["class_names"])
    with np.load(b.paths["train data"]) as f:  # the build's training codes
        z_tr = torch.from_numpy(f["z"])
    y_tr = torch.as_tensor(data["y_train"], dtype=torch.long)
    xt = torch.from_numpy(np.ascontiguousarray(x))
    z_sh = encode_mean(b.parts["encoder"], xt)
    key = shift_key(cache_key(s), s.size)
    cfile = cache / f"{s.dataset}-{s.size}-shift-{key}.pt"
    state = torch.load(cfile, map_location="cpu", weights_only=True) if cfile.is_file() else None
    t0 = time.perf_counter()
    normals = [b.parts["head"]]
    for seed in range(1, NORMAL_SEEDS[s.size]):
        h = make_head(s.latent_dim, k, s.head_hidden, seed=s.seed + seed)
        if state is not None:
            h.load_state_dict(state[f"normal{seed}"])
        else:
            train_head(h, z_tr, y_tr, epochs=s.head_epochs, lr=s.head_lr, seed=s.seed + seed)
        normals.append(h)
    times["normal heads"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    px = PIXEL[s.size]
    enc, head = pixel_net(k, s.seed)
    if state is not None:
        enc.load_state_dict(state["pixel_encoder"])
        head.load_state_dict(state["pixel_head"])
    else:
        log(f"{s.dataset}: pixel-certified baseline: a small CNN, {px['epochs']} epochs of CROWN-IBP on "
            f"{px['n_train']} images at pixel ε={px['eps']:g}")
        m = min(px["n_train"], len(y_tr))
        fit_pixel(enc, head, torch.from_numpy(np.ascontiguousarray(data["x_train"][:m])), y_tr[:m], px["eps"],
                  px["epochs"], batch_size=100, warmup=min(1, px["epochs"] - 1), lr=px["lr"], kappa_end=px["kappa_end"],
                  seed=s.seed, progress=False, log=None, eval_every=0)
    pixel = nn.Sequential(enc, head).eval()
    times["pixel baseline"] = time.perf_counter() - t0
    if state is None:
        torch.save({**{f"normal{i}": h.state_dict() for i, h in enumerate(normals) if i},
                    "pixel_encoder": enc.state_dict(), "pixel_head": head.state_dict()}, cfile)

    def metrics(pred: np.ndarray) -> dict:
        m = subset_metrics(pred, y, k)
        return {"accuracy": m.accuracy, "precision": m.precision, "recall": m.recall}

    heads: dict[str, Any] = {
        "normal": {"seeds": len(normals), "runs": [metrics(_predict(h, z_sh)) for h in normals]},
    }
    if b.parts.get("certified_head") is not None:
        heads["certified"] = {"seeds": 1, "runs": [metrics(_predict(b.parts["certified_head"], z_sh))]}
    inside = pixel_coverage(data["x_train"], x, px["eps"])
    pred = _predict(pixel, xt)
    clean = float((_predict(pixel, torch.from_numpy(np.ascontiguousarray(data["x_test"]))) == data["y_test"]).mean())
    heads["pixel"] = {"seeds": 1, "runs": [metrics(pred)], "coverage": float(inside.mean()),
                      "inside_accuracy": float((pred[inside] == y[inside]).mean()) if inside.any() else None,
                      "eps": px["eps"], "test_accuracy": clean,
                      "note": f"small CNN, {px['epochs']} epochs on {px['n_train']} images, pixel ℓ∞ ε={px['eps']:g}"}
    return {"path": str(path), "n": len(y), "description": desc, "heads": heads, "times": times,
            "cache_hit": state is not None}


# ----------------------------------------------------------------------------- Table 4
def mean_sd(vals: list[float | None]) -> str:
    v = [x for x in vals if x is not None]
    if not v:
        return "–"
    if len(v) == 1:
        return f"{v[0]:.3f}"
    return f"{statistics.fmean(v):.3f} ± {statistics.stdev(v):.3f}"


def report_for(dataset: str, head: str, out: Path, build: dict) -> dict | None:
    """The deployment report of one audited head on the shifted split, put on its spec-sheet
    (JSON, Markdown, HTML rewritten) and as `auditai check --labels` prints it; its dict."""
    from auditai.commands.check import read_inputs, read_labels
    from auditai.deploy_report import attach, deployment_report, predictions
    from auditai.inversion import encode_inputs
    from auditai.model import load_model
    from auditai.sheet import SpecSheet

    sheet_path = out / f"{dataset}_{head}.json"
    model_path = build["paths"].get("model" if head == "normal" else "certified model")
    shifted = build.get("shift", {}).get("path")
    if not (sheet_path.is_file() and model_path and shifted):
        return None
    sheet = SpecSheet.from_json(sheet_path)
    model = load_model(model_path)
    _, x = read_inputs(shifted)
    y = read_labels(shifted, x.shape[0])
    z, _ = encode_inputs(model, torch.as_tensor(x, dtype=torch.float32))
    z = z.double().numpy()
    rep = deployment_report(sheet, z, y, predictions(model.head, z), num_classes=model.num_classes,
                            inputs=[str(Path(shifted).name)], class_names=model.class_names)
    attach(sheet, rep)
    with np.load(build["paths"]["data"]) as f:
        test_z = f["z"][:8]
    sheet.to_json(sheet_path)
    sheet.to_markdown(sheet_path.with_suffix(".md"))
    sheet.to_html(sheet_path.with_suffix(".html"), model=model, codes=test_z)
    from auditai.sheet.record import write_atomic

    write_atomic(out / f"{dataset}_{head}_deployment.txt",
                 f"auditai check --sheet {sheet_path.name} --model {Path(model_path).name} --labels "
                 f"{Path(shifted).name}\n\n{sheet.check(z).to_text()}\n\n{rep.to_text()}\n")
    return rep.to_dict()


def table4(out: Path, builds: list[dict], log: Callable[[str], None] = print) -> str:
    """Table 4's layout per data set (normal / latent-certified / pixel-certified on the shifted
    split), with coverage and in-range accuracy; written to OUT/table4.md and table4.json."""
    from auditai.sheet.record import write_atomic

    lines = ["# Deployment under domain shift (paper §4.2, Table 4 layout)", "",
             "Precision and recall macro-averaged over classes; mean ± s.d. over seeds where more than "
             "one was trained. Coverage: the fraction of the shifted split inside the verified range "
             "(every unit test at its default ε, from the head's spec-sheet; the pixel baseline: every "
             "pixel inside [μ − ε − σ, μ + ε + σ] over its training images); in-range accuracy: the "
             "accuracy on those inputs (of the audited head, seed 0, whose spec-sheet gives the range).", ""]
    record: dict[str, Any] = {}
    for b in builds:
        sh = b.get("shift")
        if not sh:
            continue
        ds = b["dataset"]
        reports = {h: report_for(ds, h, out, b) for h in ("normal", "certified") if h in sh["heads"]}
        lines += [f"## {ds}: {sh['n']} shifted inputs ({sh['description']})", "",
                  "| model | seeds | precision | recall | accuracy | coverage | in-range accuracy | accuracy outside |",
                  "|---|---|---|---|---|---|---|---|"]
        rec = {}
        for h, info in sh["heads"].items():
            runs = info["runs"]
            rep = reports.get(h)
            if rep is not None:
                cov, acc_in = rep["overall"]["coverage"], rep["overall"]["inside"]["accuracy"]
                acc_out = rep["overall"]["outside"]["accuracy"]
            else:
                cov, acc_in, acc_out = info.get("coverage"), info.get("inside_accuracy"), None
            row = {m: [r[m] for r in runs] for m in ("precision", "recall", "accuracy")}
            rec[h] = {**row, "seeds": info["seeds"], "coverage": cov, "inside_accuracy": acc_in,
                      "outside_accuracy": acc_out, **({"note": info["note"]} if "note" in info else {})}
            f = (lambda v: "–" if v is None else f"{v:.3f}")
            lines.append(f"| {HEAD_NAMES[h]} | {info['seeds']} | {mean_sd(row['precision'])} | "
                         f"{mean_sd(row['recall'])} | {mean_sd(row['accuracy'])} | {f(cov)} | {f(acc_in)} | {f(acc_out)} |")
        if "pixel" in sh["heads"]:
            p = sh["heads"]["pixel"]
            lines += ["", f"Pixel baseline: {p['note']}; its accuracy on the unshifted test split "
                          f"{p['test_accuracy']:.3f}."]
        lines.append("")
        record[ds] = {"n": sh["n"], "description": sh["description"], "heads": rec}
    lines += [f"For comparison, {PAPER_TABLE4}.", ""]
    text = "\n".join(lines)
    write_atomic(out / "table4.md", text)
    write_atomic(out / "table4.json", json.dumps(record, indent=1, allow_nan=False) + "\n")
    return text


__all__ = ["build_shift", "fashion_shifted", "pixel_coverage", "rotate", "shapes_shifted", "table4"]
