"""Semantic directions in a latent space, found from attribute labels (paper §2.2, §3).

The paper takes its directions from "existing techniques"; this module is that step as a
library feature, for any latent space (a VAE's, or a StyleGAN's W with attribute labels):

- **continuous** attribute a: the mean shift of the codes per unit of the attribute,
  v ∝ Cov(z, a) / Var(a), i.e. the slope of E[z | a] (GANSpace/InterFaceGAN-style traversal).
  Not the weight vector of a regression of a on z: that vector solves Σ_z⁻¹·Cov(z, a), so
  it puts large weight on collapsed latent dimensions (tiny variance, nearly unused by the
  decoder); moving along it changes the regression's output but not the decoded image.
- **axis**: a given latent coordinate per attribute (`axes={name: index}`), for latent spaces
  trained so that a coordinate carries the attribute (a guided / semi-supervised VAE, a
  conditional generator): only scored here, never fit.
- **binary** attribute: the unit normal of a linear classifier (L2-regularised logistic
  regression by Newton's method; InterFaceGAN uses a linear SVM). `method="mean_shift"` gives
  the difference of the class means instead, which is Cov(z, a)/Var(a) for a 0/1 attribute.

Each direction can be made orthogonal to others (for example to the direction of the class the
head predicts, so that moving along "size" does not also move along "class").

Each direction comes with a held-out score: the direction is fit on a random (1 − test_fraction)
of the codes, and the attribute is predicted on the rest from the projection t = v·z alone (a
1-D linear fit for a continuous attribute: R²; a threshold for a binary one: accuracy and AUC).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from auditai.errors import DataError

ArrayLike = np.ndarray | Tensor | Sequence[float]


@dataclass(frozen=True, eq=False)
class DirectionInfo:
    """A unit direction in latent space and how well it explains its attribute.

    Attributes:
        name: the attribute's name.
        vector: unit vector of d (float32 tensor), oriented so the attribute grows along it.
        kind: "continuous" or "binary".
        method: "mean_shift", "classifier" or "axis".
        score: held-out R² (continuous) or accuracy (binary) of the attribute from t = v·z.
        score_name: "r2" or "accuracy".
        auc: held-out ROC AUC of t for a binary attribute (None for continuous).
        slope, intercept: the 1-D fit a ≈ intercept + slope·t on the training part
            (continuous): `slope` is the attribute units per unit of latent distance along v.
        t_mean, t_std: mean and standard deviation of the projections t over all codes.
        n_train, n_test: sizes of the two parts.
        orthogonal_to: names (or indices) of the directions projected out.
        within_groups: the direction and score are within groups (`groups=` was given).
    """

    name: str
    vector: Tensor
    kind: str
    method: str
    score: float
    score_name: str
    auc: float | None
    slope: float
    intercept: float
    t_mean: float
    t_std: float
    n_train: int
    n_test: int
    orthogonal_to: tuple[str, ...] = field(default=())
    within_groups: bool = False

    def describe(self) -> str:
        """One line for a spec-sheet: what the direction is and how well it is found."""
        if self.method == "axis":
            how = (f"latent coordinate trained to carry '{self.name}'; held-out R² "
                   f"{self.score:.2f}; one latent unit ≈ {self.slope:+.3g} {self.name}")
        elif self.kind == "continuous":
            how = (f"mean shift of the codes per unit of '{self.name}'; held-out R² "
                   f"{self.score:.2f}; one latent unit ≈ {self.slope:+.3g} {self.name}")
        else:
            how = (f"normal of a linear classifier for '{self.name}'; held-out accuracy "
                   f"{self.score:.2f}, AUC {self.auc:.2f}")
        if self.within_groups:
            how += " (within each class)"
        if self.orthogonal_to:
            how += f"; orthogonal to {', '.join(self.orthogonal_to)}"
        return how

    def to_dict(self) -> dict:
        """JSON-safe summary (the vector as a list)."""
        return {
            "name": self.name, "vector": self.vector.tolist(), "kind": self.kind,
            "method": self.method, "score": self.score, "score_name": self.score_name,
            "auc": self.auc, "slope": self.slope, "intercept": self.intercept,
            "t_mean": self.t_mean, "t_std": self.t_std, "n_train": self.n_train,
            "n_test": self.n_test, "orthogonal_to": list(self.orthogonal_to),
            "within_groups": self.within_groups,
        }


def _codes(z: ArrayLike) -> np.ndarray:
    a = z.detach().cpu().numpy() if isinstance(z, Tensor) else np.asarray(z)
    if a.ndim != 2:
        raise DataError(f"codes z must be N×d, got shape {a.shape}")
    a = a.astype(np.float64)
    if not np.all(np.isfinite(a)):
        raise DataError("codes z contain NaN or inf")
    return a


def _attribute(name: str, a: ArrayLike, n: int) -> np.ndarray:
    arr = a.detach().cpu().numpy() if isinstance(a, Tensor) else np.asarray(a)
    arr = arr.reshape(-1) if arr.ndim == 2 and 1 in arr.shape else arr
    if arr.shape != (n,):
        raise DataError(f"attribute '{name}' has shape {arr.shape}, expected ({n},): one value per code")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise DataError(f"attribute '{name}' contains NaN or inf")
    return arr


def _orthonormal(vectors: list[np.ndarray], d: int) -> np.ndarray:
    """An orthonormal basis (d×r) of the span of `vectors` (empty: d×0)."""
    if not vectors:
        return np.zeros((d, 0))
    m = np.stack(vectors, axis=1)
    u, s, _ = np.linalg.svd(m, full_matrices=False)
    keep = s > 1e-10 * max(s.max(), 1e-300)
    return u[:, keep]


def _resolve_orthogonal(orthogonal_to, d: int) -> tuple[list[np.ndarray], tuple[str, ...]]:
    if orthogonal_to is None:
        return [], ()
    if isinstance(orthogonal_to, Mapping):
        items = list(orthogonal_to.items())
    else:
        arr = orthogonal_to
        if isinstance(arr, Tensor):
            arr = arr.detach().cpu().numpy()
        arr = np.asarray(arr, dtype=np.float64) if not isinstance(arr, (list, tuple)) else arr
        if isinstance(arr, np.ndarray) and arr.ndim == 1:
            arr = arr[None]
        items = [(str(i), v) for i, v in enumerate(arr)]
    vecs, names = [], []
    for nm, v in items:
        if isinstance(v, DirectionInfo):
            v = v.vector
        v = v.detach().cpu().numpy() if isinstance(v, Tensor) else np.asarray(v)
        v = np.asarray(v, dtype=np.float64).reshape(-1)
        if v.shape != (d,) or not np.all(np.isfinite(v)):
            raise DataError(f"orthogonal_to '{nm}' must be a finite vector of d={d}, got shape {v.shape}")
        vecs.append(v)
        names.append(str(nm))
    return vecs, tuple(names)


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    ss_tot = float(((y - y.mean()) ** 2).sum())
    if ss_tot <= 0:
        return float("nan")
    return 1.0 - float(((y - pred) ** 2).sum()) / ss_tot


def _auc(score: np.ndarray, label: np.ndarray) -> float:
    """ROC AUC by ranks (Mann–Whitney U), ties given their average rank."""
    pos, neg = int(label.sum()), int((~label).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    s_sorted = score[order]
    # average ranks over ties
    _, first, counts = np.unique(s_sorted, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[label].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def _logistic_normal(z: np.ndarray, y: np.ndarray, l2: float, iters: int = 50) -> np.ndarray:
    """Weights w (d) of L2-regularised logistic regression on standardised codes, in z units."""
    mu, sd = z.mean(0), z.std(0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    xs = np.concatenate([(z - mu) / sd, np.ones((z.shape[0], 1))], axis=1)
    w = np.zeros(xs.shape[1])
    reg = np.full(xs.shape[1], l2 * z.shape[0])
    reg[-1] = 0.0  # no penalty on the bias
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(xs @ w, -40, 40)))
        grad = xs.T @ (p - y) + reg * w
        hess = (xs * (p * (1 - p))[:, None]).T @ xs + np.diag(reg + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w[:-1] / sd  # back to z units: w·(z-μ)/σ = (w/σ)·z + const


def find_directions(
    z: ArrayLike,
    attributes: Mapping[str, ArrayLike],
    kind: str = "continuous",
    orthogonal_to=None,
    test_fraction: float = 0.2,
    seed: int = 0,
    method: str | None = None,
    l2: float = 1e-3,
    groups: ArrayLike | None = None,
    axes: Mapping[str, int] | None = None,
) -> dict[str, DirectionInfo]:
    """Find one unit direction per attribute in the codes z (N×d), with a held-out score.

    Args:
        z: codes, N×d (array or tensor).
        attributes: name → N values (continuous: any reals; binary: 0/1 or bool).
        kind: "continuous" (mean shift, scored by R²) or "binary" (classifier normal,
            scored by accuracy and AUC).
        orthogonal_to: directions to project out first: a d-vector, a k×d array, a list of
            vectors, or a mapping name → vector/DirectionInfo.
        test_fraction: share of codes held out for the score (0 < f < 1).
        seed: seed of the random split.
        method: "mean_shift" (default for continuous), "classifier" (default for binary), or
            "axis": the direction of attribute `name` is latent coordinate `axes[name]`
            (scored, with its sign chosen, like the others).
        axes: name → latent index, for method "axis" (every attribute needs one).
        l2: ridge weight of the logistic regression (per sample, on standardised codes).
        groups: optional N group labels (e.g. the class): continuous directions then use the
            pooled *within-group* covariance, the change of the codes per unit of the attribute
            with the group held fixed (so that "size" does not also step towards the classes
            that are large on average), and R² is scored within groups too.

    Returns:
        name → :class:`DirectionInfo`, in the order of `attributes`.

    >>> rng = np.random.default_rng(0); z = rng.normal(size=(500, 4))
    >>> info = find_directions(z, {"a": z[:, 1] * 2.0})["a"]
    >>> round(float(info.vector[1]), 2), info.score > 0.9
    (1.0, True)
    """
    if kind not in ("continuous", "binary"):
        raise DataError(f"kind must be 'continuous' or 'binary', got {kind!r}")
    method = method or ("mean_shift" if kind == "continuous" else "classifier")
    if method not in ("mean_shift", "classifier", "axis"):
        raise DataError(f"method must be 'mean_shift', 'classifier' or 'axis', got {method!r}")
    if method == "classifier" and kind == "continuous":
        raise DataError("method 'classifier' needs kind='binary' (a continuous attribute uses "
                        "the mean shift Cov(z, a)/Var(a))")
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
    zz = _codes(z)
    n, d = zz.shape
    if not attributes:
        raise DataError("attributes is empty: name at least one attribute")
    n_test = round(n * test_fraction)
    if n_test < 2 or n - n_test < 2:
        raise DataError(f"{n} codes are too few to fit and score a direction with "
                        f"test_fraction={test_fraction} (need at least 2 in each part)")
    perm = np.random.default_rng(seed).permutation(n)
    test, train = perm[:n_test], perm[n_test:]
    if method == "axis":
        missing = [k for k in attributes if axes is None or k not in axes]
        if missing:
            raise DataError(f"method 'axis' needs axes[name] for every attribute; missing {missing}")
        bad = {k: axes[k] for k in attributes if not 0 <= int(axes[k]) < d}
        if bad:
            raise DataError(f"axes {bad} are outside the latent dimensions 0..{d - 1}")
    ortho_vecs, ortho_names = _resolve_orthogonal(orthogonal_to, d)
    q = _orthonormal(ortho_vecs, d)
    if groups is not None:
        if kind != "continuous":
            raise DataError("groups applies to continuous attributes only")
        g = groups.detach().cpu().numpy() if isinstance(groups, Tensor) else np.asarray(groups)
        if g.shape != (n,):
            raise DataError(f"groups has shape {g.shape}, expected ({n},): one label per code")
        _, gid = np.unique(g, return_inverse=True)
        ng = int(gid.max()) + 1
        counts = np.bincount(gid[train], minlength=ng)
        if (counts == 0).any():
            raise DataError("a group has no codes in the training part: too few codes per group")

    def centre(values: np.ndarray) -> np.ndarray:
        """Subtract the training part's (group) mean from every row (all N rows)."""
        if groups is None:
            return values - values[train].mean(0)
        sums = np.zeros((ng,) + values.shape[1:])
        np.add.at(sums, gid[train], values[train])
        return values - (sums / counts.reshape((-1,) + (1,) * (values.ndim - 1)))[gid]

    zc = centre(zz)

    out: dict[str, DirectionInfo] = {}
    for name, values in attributes.items():
        a = _attribute(name, values, n)
        a_tr, z_tr = a[train], zz[train]
        if kind == "binary":
            uniq = np.unique(a)
            if not np.all(np.isin(uniq, (0.0, 1.0))):
                raise DataError(f"binary attribute '{name}' must hold only 0/1 (or bools), "
                                f"got values {uniq[:5].tolist()}")
            if len(np.unique(a_tr)) < 2:
                raise DataError(f"binary attribute '{name}' has a single class in the training part")
        var = a_tr.var()
        if var <= 0:
            raise DataError(f"attribute '{name}' is constant on the training codes: it defines no direction")
        ac = centre(a)
        if groups is not None:
            var = ac[train].var()
            if var <= 0:
                raise DataError(f"attribute '{name}' is constant within every group: it defines no direction")
        if method == "mean_shift":
            v = (zc[train] * ac[train][:, None]).mean(0) / var
        elif method == "axis":
            v = np.eye(d)[int(axes[name])]
        else:
            v = _logistic_normal(z_tr, a_tr, l2)
        if q.shape[1]:
            v = v - q @ (q.T @ v)
        nv = np.linalg.norm(v)
        if not np.isfinite(nv) or nv < 1e-12:
            raise DataError(f"attribute '{name}' gives a zero direction (no linear trace in the "
                            "codes, or it lies in the span of orthogonal_to)")
        v = v / nv
        t = zz @ v
        # within groups (if any), centred by the training part's means
        tc = zc @ v if groups is not None else t
        at = ac if groups is not None else a
        t_tr, t_te = tc[train], tc[test]
        # orient so that the attribute grows along v
        cov = float(((t_tr - t_tr.mean()) * (at[train] - at[train].mean())).mean())
        if cov < 0:
            v, t, tc, t_tr, t_te = -v, -t, -tc, -t_tr, -t_te
            cov = -cov
        slope = cov / max(float(t_tr.var()), 1e-300)
        intercept = float(at[train].mean() - slope * t_tr.mean())
        auc = None
        if kind == "continuous":
            score, score_name = _r2(at[test], intercept + slope * t_te), "r2"
        else:
            lab_tr, lab_te = a_tr > 0.5, a[test] > 0.5
            # threshold: midpoint of the two class means of t on the training part
            thr = 0.5 * (t_tr[lab_tr].mean() + t_tr[~lab_tr].mean())
            score = float(((t_te > thr) == lab_te).mean())
            score_name, auc = "accuracy", _auc(t_te, lab_te)
        out[name] = DirectionInfo(
            name=str(name), vector=torch.as_tensor(v, dtype=torch.float32), kind=kind,
            method=method, score=float(score), score_name=score_name, auc=auc,
            slope=float(slope), intercept=intercept, t_mean=float(t.mean()),
            t_std=float(t.std()), n_train=len(train), n_test=n_test,
            orthogonal_to=ortho_names, within_groups=groups is not None,
        )
    return out


def as_model_directions(infos: Mapping[str, DirectionInfo]) -> dict[str, tuple[Tensor, str]]:
    """name → (vector, description), the form `AuditModel(directions=...)` accepts."""
    return {name: (info.vector, info.describe()) for name, info in infos.items()}
