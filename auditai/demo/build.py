"""Build the demo's model: data → VAE (e, g) → semantic directions → head f_d → AuditModel.

`build_demo("shapes" | "fashion", out_dir)` follows the paper's pipeline (Fig. 1) on data that
needs no download: it generates (or loads) images and their factors, trains the VAE, finds one
direction per attribute with `auditai.directions.find_directions` (held-out R² printed), trains a
normal classifier head on the codes, and saves

- ``<dataset>_model.auditai``: the AuditModel (head, encoder, decoder, named directions),
- ``<dataset>_train.npz``: the training codes ``z`` and labels ``y`` (deployment ranges),
- ``<dataset>_test.npz``: held-out test codes ``z``, labels ``y`` and images ``x``,
- ``<dataset>_attributes.npz``: the test images' attributes (one array per name),
- ``<dataset>_strips.png``: images decoded along each direction (to look at).

Trained weights are cached under `cache_dir`, keyed by a hash of this package's code and the
settings, so a second run only regenerates data and re-encodes (seconds).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from auditai.directions import DirectionInfo, as_model_directions, find_directions
from auditai.errors import DataError

DATASETS = ("shapes", "fashion")
MIN_R2 = 0.8  # a direction a gated unit test uses must explain its attribute at least this well


@dataclass(frozen=True)
class DemoSettings:
    """Everything that determines the trained weights (part of the cache key).

    The VAE is *guided* (semi-supervised): the first k latent coordinates are pulled to the k
    standardised attributes with weight `guide_weight` (0: a plain VAE), β warms up over
    `vae_warmup` epochs. `certify` lists (direction, ε) pairs for the certified head
    (`auditai.train.fit`, CROWN-IBP) trained for `cert_epochs`; empty: no certified head.
    `cnn_epochs`: the pixel-space CNN classifier (`auditai.demo.pixel`, the black-box target).
    """

    dataset: str
    size: str
    seed: int = 0
    n_train: int = 16000
    n_test: int = 2000
    latent_dim: int = 10
    vae_epochs: int = 8
    vae_beta: float = 0.1
    vae_channels: int = 16
    vae_batch: int = 128
    vae_warmup: float = 1.0
    guide_weight: float = 30.0
    class_weight: float = 0.0
    head_hidden: tuple[int, ...] = (64, 64)
    head_epochs: int = 30
    head_lr: float = 2e-3
    direction_method: str = "mean_shift"
    certify: tuple[tuple[str, float], ...] = ()
    cert_epochs: int = 20
    cnn_epochs: int = 3


#: what the certified heads are trained for: the example suites' gated directions and their
#: largest gated ε (example_suites/<dataset>/auditai_<dataset>.yaml)
CERTIFY = {
    "shapes": (("x", 0.5), ("y", 0.5), ("scale", 0.5), ("rotation", 0.5), ("brightness", 0.5)),
    "fashion": (("x", 0.5), ("y", 0.5), ("brightness", 0.5), ("area", 0.25)),
}


def settings_for(dataset: str, size: str = "full", seed: int = 0) -> DemoSettings:
    """The demo's settings per data set and size ("full" for `make demo`, "tiny" for tests)."""
    if dataset not in DATASETS:
        raise DataError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    if size == "tiny":
        return DemoSettings(dataset, size, seed, n_train=384, n_test=128, vae_epochs=1,
                            vae_beta=0.1 if dataset == "shapes" else 1.0, head_epochs=3,
                            certify=CERTIFY[dataset], cert_epochs=2, cnn_epochs=2)
    if size != "full":
        raise DataError(f"size must be 'full' or 'tiny', got {size!r}")
    if dataset == "shapes":
        return DemoSettings(dataset, size, seed, n_train=12000, n_test=2000, vae_epochs=8,
                            vae_beta=0.1, certify=CERTIFY[dataset])
    # Fashion-MNIST's measured attributes covary within a class with other style coordinates,
    # so the mean shift picks those up (held-out R² area 0.77, width 0.70, height 0.61); the
    # guided coordinate itself explains each attribute better (0.84-0.99), so it is the direction
    return DemoSettings(dataset, size, seed, n_train=12000, n_test=2000, vae_epochs=8,
                        vae_beta=1.0, class_weight=1.0, direction_method="axis",
                        certify=CERTIFY[dataset])


@dataclass
class DemoBuild:
    """What `build_demo` made: the model (or its parts), the directions, the files, the times."""

    dataset: str
    settings: DemoSettings
    model: Any  # auditai.AuditModel, or None when auditai.model is not available
    parts: dict[str, Any]  # head, encoder, decoder, vae, class_names
    directions: dict[str, DirectionInfo]
    test_accuracy: float
    paths: dict[str, str] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)
    cache_hit: bool = False
    data_source: str = ""
    certified_accuracy: float | None = None
    certified_note: str = ""
    certified_model: Any = None
    classifier_accuracy: float | None = None  # the pixel CNN on the decoded test codes g(z)

    def r2(self) -> dict[str, float]:
        return {k: v.score for k, v in self.directions.items()}

    def summary_lines(self) -> list[str]:
        lines = [(f"{self.dataset}: data {self.data_source}; head test accuracy "
                 f"{self.test_accuracy:.3f}; {'cached' if self.cache_hit else 'trained'} in "
                 f"{sum(self.times.values()):.1f} s")]
        if self.certified_accuracy is not None:
            lines.append(f"  certified head test accuracy {self.certified_accuracy:.3f} "
                         f"({self.certified_note})")
        elif self.certified_note:
            lines.append(f"  no certified head: {self.certified_note}")
        if self.classifier_accuracy is not None:
            lines.append(f"  pixel CNN classifier accuracy on the decoded test codes "
                         f"{self.classifier_accuracy:.3f} (the black-box target)")
        for name, info in self.directions.items():
            flag = "" if info.score >= MIN_R2 else f"   (below {MIN_R2}: not for gated tests)"
            lines.append(f"  direction {name:<11} held-out R² {info.score:5.2f}{flag}")
        return lines


# ----------------------------------------------------------------------------- data
def load_data(settings: DemoSettings, fashion_dir: str | None = None,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Images (N×1×32×32), labels, attributes and class names for train and test; deterministic."""
    from auditai.demo import fashion, shapes

    s = settings
    if s.dataset == "shapes":
        x, f = shapes.generate(s.n_train + s.n_test, seed=s.seed)
        attrs = {k: f[k] for k in ("x", "y", "scale", "rotation", "brightness")}
        y = f["shape"]
        names, source = list(shapes.SHAPES), "procedural shapes"
    else:
        try:
            x28, y = fashion.load_fashion_mnist(fashion_dir, "train", limit=s.n_train + s.n_test)
            names, source = list(fashion.CLASS_NAMES), "Fashion-MNIST"
        except DataError as e:
            log(f"Fashion-MNIST not available ({e}); using scikit-learn's 8×8 digits instead")
            x28, y = fashion.load_digits_fallback(size=24)
            names, source = [str(i) for i in range(10)], "scikit-learn digits (fallback)"
            x28, y = x28[: s.n_train + s.n_test], y[: s.n_train + s.n_test]
        x, _ = fashion.to_canvas(x28, 32, seed=s.seed)
        attrs = fashion.measure_attributes(x)
    n_test = s.n_test if len(y) >= s.n_train + s.n_test else max(len(y) // 5, 1)
    cut = len(y) - n_test
    return {
        "x_train": x[:cut], "y_train": np.asarray(y[:cut]), "x_test": x[cut:],
        "y_test": np.asarray(y[cut:]),
        "attrs_train": {k: v[:cut] for k, v in attrs.items()},
        "attrs_test": {k: v[cut:] for k, v in attrs.items()},
        "class_names": names, "source": source,
    }


# ----------------------------------------------------------------------------- cache
#: the files whose code determines the trained weights (not run.py: it only orchestrates)
WEIGHT_CODE = ("build.py", "fashion.py", "heads.py", "pixel.py", "shapes.py", "vae.py")
LIBRARY_CODE = ("directions.py", "train.py", "latent.py")


def code_hash() -> str:
    """sha256 over the source files whose code determines the trained weights."""
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for p in [here / f for f in WEIGHT_CODE] + [here.parent / f for f in LIBRARY_CODE]:
        if p.is_file():
            h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def cache_key(settings: DemoSettings) -> str:
    blob = json.dumps({"settings": asdict(settings), "code": code_hash(),
                       "torch": torch.__version__.split("+")[0]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


# ----------------------------------------------------------------------------- strips
@torch.no_grad()
def decode_strips(decoder: torch.nn.Module, z0: torch.Tensor, directions: dict[str, DirectionInfo],
                  steps: int = 9, span: float = 2.0) -> dict[str, np.ndarray]:
    """name → steps×H×W images decoded along each direction from the code z0 (d).

    The strip moves t = v·z from t_mean − span·t_std to t_mean + span·t_std (the codes' range).
    """
    out = {}
    for name, info in directions.items():
        v = info.vector.to(z0.dtype)
        ts = torch.linspace(info.t_mean - span * info.t_std, info.t_mean + span * info.t_std, steps)
        z = z0[None] + (ts - z0 @ v)[:, None] * v[None]
        out[name] = decoder(z)[:, 0].cpu().numpy()
    return out


def save_strips(path: str | Path, strips: dict[str, np.ndarray], title: str = "",
                scores: dict[str, float] | None = None) -> None:
    """One row per direction, in a PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, steps = len(strips), max(len(v) for v in strips.values())
    fig, axes = plt.subplots(rows, steps, figsize=(steps * 0.9, rows * 1.0 + 0.4), squeeze=False)
    for r, (name, imgs) in enumerate(strips.items()):
        for c in range(steps):
            ax = axes[r, c]
            ax.imshow(imgs[c], cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
        label = name if scores is None else f"{name}\nR² {scores[name]:.2f}"
        axes[r, 0].set_ylabel(label, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# ----------------------------------------------------------------------------- heads
def _certified_head(s: DemoSettings, infos: dict[str, DirectionInfo], z: torch.Tensor,
                    y: torch.Tensor, n_cls: int, state: dict | None,
                    log: Callable[[str], None]) -> tuple[torch.nn.Module | None, str]:
    """A head trained with `auditai.train.fit` (paper §2.3) for the (direction, ε) pairs of
    `s.certify`, or (None, why) when certified training is not available."""
    try:
        from auditai.latent import Direction
        from auditai.train import fit
    except ImportError as e:  # certified training is another part of the project
        return None, f"auditai.train is not available ({e})"
    from auditai.demo.heads import make_head

    missing = [n for n, _ in s.certify if n not in infos]
    if missing:
        raise DataError(f"certify names unknown directions {missing}; known: {sorted(infos)}")
    head = make_head(s.latent_dim, n_cls, s.head_hidden, seed=s.seed + 1)
    eps = {n: e for n, e in s.certify}
    note = "CROWN-IBP certified training for " + ", ".join(f"{n} ε={e:g}" for n, e in s.certify)
    if state is not None:
        head.load_state_dict(state)
        head.eval()
        return head, note
    log(f"{s.dataset}: certified training of a second head ({s.cert_epochs} epochs; {note})")
    sets = {n: Direction(infos[n].vector, n) for n in eps}
    fit(head, z, y, sets, eps, epochs=s.cert_epochs, method="crown-ibp", seed=s.seed,
        warmup=max(1, s.cert_epochs // 5), lr=2e-3, eval_every=0, progress=False,
        log=None)
    head.eval()
    return head, note


# ----------------------------------------------------------------------------- build
def build_demo(dataset: str = "shapes", out_dir: str | Path = "demo_output", size: str = "full",
               seed: int = 0, cache_dir: str | Path | None = None, fashion_dir: str | None = None,
               strips: bool = True, save: bool = True, verbose: bool = True,
               settings: DemoSettings | None = None) -> DemoBuild:
    """Build (or reuse from the cache) the demo model for `dataset`; see the module docstring.

    `cache_dir` defaults to ``out_dir/cache``. `settings` overrides `settings_for(...)`.
    """
    from auditai.demo.heads import accuracy, make_head, train_head
    from auditai.demo.pixel import decode, image_accuracy, make_cnn, train_cnn
    from auditai.demo.vae import ConvVAE, encode_mean, train_vae

    log: Callable[[str], None] = print if verbose else (lambda _m: None)
    s = settings or settings_for(dataset, size, seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(cache_dir) if cache_dir is not None else out / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}

    t0 = time.perf_counter()
    data = load_data(s, fashion_dir, log)
    times["data"] = time.perf_counter() - t0
    x_tr = torch.from_numpy(np.ascontiguousarray(data["x_train"]))
    x_te = torch.from_numpy(np.ascontiguousarray(data["x_test"]))
    y_tr = torch.as_tensor(data["y_train"], dtype=torch.long)
    y_te = torch.as_tensor(data["y_test"], dtype=torch.long)
    n_cls = len(data["class_names"])

    attr_names = list(data["attrs_train"])
    factors = torch.as_tensor(np.stack([data["attrs_train"][k] for k in attr_names], 1),
                              dtype=torch.float32)
    key = cache_key(s)
    cfile = cache / f"{s.dataset}-{s.size}-{key}.pt"
    hit = cfile.is_file()
    t0 = time.perf_counter()
    if hit:
        state = torch.load(cfile, map_location="cpu", weights_only=True)
        vae = ConvVAE(s.latent_dim, s.vae_channels)
        vae.load_state_dict(state["vae"])
        vae.eval()
        log(f"{s.dataset}: reusing the trained VAE and head from {cfile}")
    else:
        log(f"{s.dataset}: training the guided VAE on {len(x_tr)} images ({s.vae_epochs} "
            f"epochs, KL weight {s.vae_beta}, attributes {', '.join(attr_names)} on latent "
            f"coordinates 0-{len(attr_names) - 1})")
        vae, _ = train_vae(x_tr, s.latent_dim, s.vae_epochs, s.vae_batch, s.vae_beta,
                           seed=s.seed, channels=s.vae_channels, log=log, factors=factors,
                           guide_weight=s.guide_weight, labels=y_tr, class_weight=s.class_weight,
                           warmup_epochs=s.vae_warmup)
    times["vae"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    encoder, decoder = vae.encoder, vae.decoder
    z_tr, z_te = encode_mean(encoder, x_tr), encode_mean(encoder, x_te)
    times["encode"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    # within each class: the unit tests ask whether the class survives a change of the
    # attribute, so the direction must not also step towards classes that differ in it on average
    infos = find_directions(z_tr, data["attrs_train"], seed=s.seed, groups=data["y_train"],
                            method=s.direction_method,
                            axes={k: i for i, k in enumerate(attr_names)})
    times["directions"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    head = make_head(s.latent_dim, n_cls, s.head_hidden, seed=s.seed)
    if hit:
        head.load_state_dict(state["head"])
        head.eval()
    else:
        train_head(head, z_tr, y_tr, epochs=s.head_epochs, lr=s.head_lr, seed=s.seed, log=log)
    acc = accuracy(head, z_te, y_te)
    times["head"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    cert_head, cert_acc, cert_note = None, None, ""
    if s.certify:
        cert_head, cert_note = _certified_head(s, infos, z_tr, y_tr, n_cls,
                                               state.get("cert_head") if hit else None, log)
        if cert_head is not None:
            cert_acc = accuracy(cert_head, z_te, y_te)
    times["certified head"] = time.perf_counter() - t0

    # the pixel-space classifier f of the black-box unit tests (target: classifier, §2.2)
    t0 = time.perf_counter()
    cnn = make_cnn(n_cls, seed=s.seed + 2)
    if hit and "cnn" in state:
        cnn.load_state_dict(state["cnn"])
        cnn.eval()
    else:
        log(f"{s.dataset}: training the pixel CNN on the real and the reconstructed training "
            f"images ({s.cnn_epochs} epochs)")
        x_fit = torch.cat([x_tr, decode(decoder, z_tr)])
        train_cnn(cnn, x_fit, torch.cat([y_tr, y_tr]), epochs=s.cnn_epochs, seed=s.seed, log=log)
    cnn_acc = image_accuracy(cnn, decode(decoder, z_te), y_te)
    times["pixel cnn"] = time.perf_counter() - t0
    if not hit or "cnn" not in state:
        torch.save({"vae": vae.state_dict(), "head": head.state_dict(), "cnn": cnn.state_dict(),
                    **({"cert_head": cert_head.state_dict()} if cert_head is not None else {})},
                   cfile)

    build = DemoBuild(s.dataset, s, None, {
        "head": head, "encoder": encoder, "decoder": decoder, "vae": vae,
        "class_names": data["class_names"], "certified_head": cert_head, "classifier": cnn,
    }, infos, acc, times=times, cache_hit=hit, data_source=data["source"],
        certified_accuracy=cert_acc, certified_note=cert_note, classifier_accuracy=cnn_acc)

    metadata = {
        "demo": s.dataset, "data": data["source"], "settings": asdict(s), "cache_key": key,
        "test_accuracy": acc, "classifier_accuracy_decoded": cnn_acc,
        "classifier": "pixel CNN (auditai.demo.pixel), trained on real and reconstructed images",
        "directions": {k: {"r2": v.score, "slope": v.slope, "t_std": v.t_std,
                           "within_class": v.within_groups} for k, v in infos.items()},
    }
    try:
        from auditai.model import AuditModel, save_model
    except ImportError:  # the model module is another part of the project
        AuditModel = save_model = None  # type: ignore[assignment]
    if AuditModel is not None:
        def audit_model(h: torch.nn.Module, extra: dict) -> Any:
            return AuditModel(
                h, encoder=encoder, decoder=decoder, classifier=cnn,
                directions=as_model_directions(infos),
                dims={"all": list(range(s.latent_dim)),
                      "attributes": list(range(len(attr_names)))},
                class_names=data["class_names"], metadata={**metadata, **extra},
                input_shape=(1, 32, 32),
            )

        build.model = audit_model(head, {"head": "normally trained (cross-entropy)"})
        if cert_head is not None:
            build.certified_model = audit_model(cert_head, {
                "head": "certified training (auditai.train.fit, CROWN-IBP)",
                "certified_training": {"sets": [n for n, _ in s.certify],
                                       "eps": [e for _, e in s.certify],
                                       "epochs": s.cert_epochs, "test_accuracy": cert_acc}})
    if save:
        t0 = time.perf_counter()
        if build.model is not None:
            path = out / f"{s.dataset}_model.auditai"
            save_model(path, build.model, example_input=torch.zeros(2, 1, 32, 32))
            build.paths["model"] = str(path)
        if build.certified_model is not None:
            path = out / f"{s.dataset}_certified.auditai"
            save_model(path, build.certified_model, example_input=torch.zeros(2, 1, 32, 32))
            build.paths["certified model"] = str(path)
        p = out / f"{s.dataset}_test.npz"
        np.savez_compressed(p, z=z_te.numpy(), y=y_te.numpy(), x=x_te.numpy())
        build.paths["data"] = str(p)
        p = out / f"{s.dataset}_train.npz"  # the codes of the spec-sheet's deployment ranges (§2.4)
        np.savez_compressed(p, z=z_tr.numpy(), y=y_tr.numpy())
        build.paths["train data"] = str(p)
        p = out / f"{s.dataset}_attributes.npz"
        np.savez_compressed(p, **{k: np.asarray(v) for k, v in data["attrs_test"].items()})
        build.paths["attributes"] = str(p)
        p = out / f"{s.dataset}_directions.json"
        p.write_text(json.dumps({k: v.to_dict() for k, v in infos.items()}, indent=1))
        build.paths["directions"] = str(p)
        if strips:
            z0 = z_te[0]
            p = out / f"{s.dataset}_strips.png"
            save_strips(p, decode_strips(decoder, z0, infos), f"{s.dataset}: decoded along each direction",
                        {k: v.score for k, v in infos.items()})
            build.paths["strips"] = str(p)
        times["save"] = time.perf_counter() - t0
    for line in build.summary_lines():
        log(line)
    return build
