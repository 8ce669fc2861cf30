"""VNN-LIB properties: read one, and decide it for a network (unsat / sat / unknown / timeout).

A property declares inputs X_i and outputs Y_j (``(declare-const X_0 Real)``), bounds every input
by single-variable asserts (``(assert (<= X_0 0.5))``, ``(assert (>= X_0 -0.5))``: the input box)
and states the *unsafe* outputs: plain asserts of linear inequalities over Y and constants (a
conjunction), or ``(assert (or (and ...) ...))`` (a disjunction of conjunctions). `sat` means some
input of the box has outputs in the unsafe set (a counterexample); `unsat` that none has.

`decide` picks its own strategy: latent PGD on the box first (points checked in float64), then
bounds of the property's rows (CROWN-IBP, forward-mode linear bounds through the graph,
`auditai.bounds.graph_forward`, and CROWN where its intermediate passes are small), then input splitting over the perturbed
coordinates (those with lower < upper) until the time limit. A disjunct is refuted on a box when
the certified lower bound of one of its rows minus the rounding tolerance is > 0 (strict and
non-strict inequalities are refuted alike, so `unsat` is sound for both); a `sat` point is
replayed in float64, strict inequalities strictly, before it is given. Anything the reader does
not support is a VnnlibError naming the line and the token.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from auditai.errors import AuditaiError

_TOKEN = re.compile(r"\(|\)|[^\s()]+")
_VAR = re.compile(r"^([XY])_(\d+)$")
_NUM = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


class VnnlibError(AuditaiError, ValueError):
    """A property auditai cannot read: names the file, the line and the token."""

    def __init__(self, message: str, where: str = "<vnnlib>", line: int | None = None, token: str | None = None):
        loc = where + (f":{line}" if line is not None else "")
        tok = f" at {token!r}" if token is not None else ""
        super().__init__(f"{loc}: {message}{tok}")


@dataclass
class Tok:
    text: str
    line: int


@dataclass
class Row:
    """a·Y + b ≤ 0 (or < 0 when strict): one linear inequality over the outputs."""

    a: dict[int, float]
    b: float
    strict: bool = False


@dataclass
class Property:
    """The input box (lower, upper over X) and the unsafe set: a disjunction of conjunctions of Rows."""

    n_in: int
    n_out: int
    lower: Tensor
    upper: Tensor
    disjuncts: list[list[Row]] = field(default_factory=list)

    def matrix(self) -> tuple[Tensor, Tensor, list[list[int]]]:
        """(C R×n_out, d R, rows of each disjunct): row r is C[r]·y + d[r] ≤ 0."""
        rows = [r for dj in self.disjuncts for r in dj]
        C = torch.zeros(len(rows), self.n_out, dtype=torch.float64)
        d = torch.zeros(len(rows), dtype=torch.float64)
        for i, r in enumerate(rows):
            for j, v in r.a.items():
                C[i, j] += v
            d[i] = r.b
        groups, i = [], 0
        for dj in self.disjuncts:
            groups.append(list(range(i, i + len(dj))))
            i += len(dj)
        return C, d, groups


def _tokens(text: str, where: str) -> list[Tok]:
    out = []
    for ln, line in enumerate(text.splitlines(), 1):
        line = line.split(";", 1)[0]
        out += [Tok(m.group(0), ln) for m in _TOKEN.finditer(line)]
    return out


def _sexprs(toks: list[Tok], where: str) -> list:
    """Top-level S-expressions; each is (body, line): body a token text or a list of those."""
    stack: list[list] = [[]]
    opens: list[Tok] = []
    for t in toks:
        if t.text == "(":
            stack.append([])
            opens.append(t)
        elif t.text == ")":
            if len(stack) == 1:
                raise VnnlibError("unbalanced ')'", where, t.line, ")")
            e = stack.pop()
            stack[-1].append((e, opens.pop().line))
        else:
            stack[-1].append((t.text, t.line))
    if len(stack) != 1:
        raise VnnlibError("unclosed '('", where, opens[-1].line, "(")
    return stack[0]


def _line(e) -> int:
    return e[1]


def _head(e) -> str | None:
    body = e[0]
    return body[0][0] if isinstance(body, list) and body and isinstance(body[0][0], str) else None


def _linear(e, where: str, decl: dict) -> tuple[dict[str, float], float]:
    """A linear term: ({variable: coefficient}, constant)."""
    body, ln = e
    if isinstance(body, str):
        if _NUM.match(body):
            return {}, float(body)
        if body in decl:
            return {body: 1.0}, 0.0
        raise VnnlibError("unknown variable or not a number", where, ln, body)
    if not body:
        raise VnnlibError("empty expression", where, ln, "()")
    op = body[0][0]
    args = [_linear(a, where, decl) for a in body[1:]]
    if op == "+" and args:
        return _add(args, 1.0)
    if op == "-" and len(args) == 1:
        return {k: -v for k, v in args[0][0].items()}, -args[0][1]
    if op == "-" and len(args) >= 2:
        neg = [({k: -v for k, v in a[0].items()}, -a[1]) for a in args[1:]]
        return _add([args[0]] + neg, 1.0)
    if op == "*" and args:
        coef, term = 1.0, None
        for a in args:
            if a[0]:
                if term is not None:
                    raise VnnlibError("a product of two variables is not linear", where, ln, "*")
                term = a
            else:
                coef *= a[1]
        if term is None:
            return {}, coef
        return {k: coef * v for k, v in term[0].items()}, coef * term[1]
    raise VnnlibError("unsupported operator in a linear term (expected + - * , a variable or a number)",
                      where, ln, str(op))


def _add(args, s: float) -> tuple[dict[str, float], float]:
    acc: dict[str, float] = {}
    c = 0.0
    for a, b in args:
        for k, v in a.items():
            acc[k] = acc.get(k, 0.0) + s * v
        c += s * b
    return acc, c


def _ineq(e, where: str, decl: dict) -> tuple[dict[str, float], float, bool]:
    """(<= a b) and friends → (coefficients, constant, strict) of lhs − rhs ≤ 0 (< 0 when strict)."""
    body, ln = e
    op = body[0][0]
    if len(body) != 3:
        raise VnnlibError(f"'{op}' takes two terms", where, ln, op)
    (a, ca), (b, cb) = _linear(body[1], where, decl), _linear(body[2], where, decl)
    if op in ("<=", "<"):
        coefs, const = _add([(a, ca), ({k: -v for k, v in b.items()}, -cb)], 1.0)
    else:
        coefs, const = _add([(b, cb), ({k: -v for k, v in a.items()}, -ca)], 1.0)
    return {k: v for k, v in coefs.items() if v != 0.0}, const, op in ("<", ">")


_CMP = ("<=", ">=", "<", ">")


def _formula(e, where: str, decl: dict) -> list[list[tuple]]:
    """A formula as DNF: a list of conjunctions of inequalities (coefs, const, strict, line)."""
    op = _head(e)
    ln = _line(e)
    if op in _CMP:
        c, k, s = _ineq(e, where, decl)
        return [[(c, k, s, ln)]]
    if op == "and":
        out = [[]]
        for a in e[0][1:]:
            out = [x + y for x in out for y in _formula(a, where, decl)]
            if len(out) > 4096:
                raise VnnlibError("the property's disjunctive normal form exceeds 4096 disjuncts", where, ln, "and")
        return out
    if op == "or":
        return [conj for a in e[0][1:] for conj in _formula(a, where, decl)]
    tok = op if op is not None else (e[0] if isinstance(e[0], str) else "(")
    raise VnnlibError("unsupported formula (expected <=, >=, <, >, and, or)", where, ln, str(tok))


def parse_vnnlib(text: str, where: str = "<vnnlib>") -> Property:
    """Read a VNN-LIB property (see the module docstring); VnnlibError names line and token."""
    decl: dict[str, int] = {}
    xs, ys = set(), set()
    bounds_lo: dict[int, float] = {}
    bounds_hi: dict[int, float] = {}
    out_dnf: list[list[tuple]] = [[]]
    for e in _sexprs(_tokens(text, where), where):
        body, ln = e
        op = _head(e)
        if op == "declare-const":
            if len(body) != 3 or not isinstance(body[1][0], str) or body[2][0] != "Real":
                raise VnnlibError("expected (declare-const NAME Real)", where, ln, "declare-const")
            name = body[1][0]
            m = _VAR.match(name)
            if not m:
                raise VnnlibError("variables must be named X_i (inputs) or Y_j (outputs)", where, ln, name)
            decl[name] = int(m.group(2))
            (xs if m.group(1) == "X" else ys).add(int(m.group(2)))
        elif op == "assert":
            if len(body) != 2:
                raise VnnlibError("assert takes one formula", where, ln, "assert")
            dnf = _formula(body[1], where, decl)
            names = {k for conj in dnf for c, _, _, _ in conj for k in c}
            if names and all(n.startswith("X") for n in names):
                if len(dnf) != 1 or len(dnf[0]) != 1:
                    raise VnnlibError("input constraints must be plain bounds on one variable (a disjunction over "
                                      "inputs is not supported)", where, ln, op or "or")
                c, k, _, _ = dnf[0][0]
                if len(c) != 1:
                    raise VnnlibError("an input constraint must bound one variable by a constant", where, ln,
                                      _head(body[1]))
                (name, a), = c.items()
                i, v = decl[name], -k / a  # a·x + k ≤ 0
                if a > 0:
                    bounds_hi[i] = min(bounds_hi.get(i, math.inf), v)
                else:
                    bounds_lo[i] = max(bounds_lo.get(i, -math.inf), v)
            elif any(n.startswith("X") for n in names):
                raise VnnlibError("a constraint mixing inputs X and outputs Y is not supported", where, ln,
                                  _head(body[1]))
            else:
                out_dnf = [x + y for x in out_dnf for y in dnf]
                if len(out_dnf) > 4096:
                    raise VnnlibError("the property's disjunctive normal form exceeds 4096 disjuncts", where, ln)
        elif op is None:
            raise VnnlibError("expected a (declare-const ...) or (assert ...) form", where, ln,
                              body if isinstance(body, str) else "(")
        else:
            raise VnnlibError("unsupported command (expected declare-const or assert)", where, ln, op)
    n_in, n_out = len(xs), len(ys)
    if n_in == 0 or sorted(xs) != list(range(n_in)) or sorted(ys) != list(range(n_out)):
        raise VnnlibError(f"inputs must be X_0..X_{{n-1}} and outputs Y_0..Y_{{m-1}} without gaps "
                          f"(got X {sorted(xs)[:6]}..., Y {sorted(ys)[:6]}...)", where)
    missing = [i for i in range(n_in) if i not in bounds_lo or i not in bounds_hi]
    if missing:
        raise VnnlibError(f"input X_{missing[0]} has no lower or no upper bound (the input set must be a box)", where)
    lo = torch.tensor([bounds_lo[i] for i in range(n_in)], dtype=torch.float64)
    hi = torch.tensor([bounds_hi[i] for i in range(n_in)], dtype=torch.float64)
    if (hi < lo).any():
        i = int((hi < lo).nonzero()[0])
        raise VnnlibError(f"input X_{i} has an empty range [{bounds_lo[i]}, {bounds_hi[i]}]", where)
    if not out_dnf or out_dnf == [[]]:
        raise VnnlibError("the property states no output constraint", where)
    disjuncts = [[Row({decl[k]: v for k, v in c.items()}, k0, s) for c, k0, s, _ in conj] for conj in out_dnf]
    return Property(n_in, n_out, lo, hi, disjuncts)


# =========================================================================== deciding a property
@dataclass
class Answer:
    """status: unsat | sat | unknown | timeout; x, y: the replayed counterexample (sat only)."""

    status: str
    x: list | None = None
    y: list | None = None
    time_s: float = 0.0
    phase: str = ""
    boxes: int = 0

    def text(self) -> str:
        """The VNN-COMP result text: the status line, then ((X_0 v) ... (Y_0 v)) for sat."""
        if self.status != "sat":
            return self.status + "\n"
        items = [f"(X_{i} {float(v)!r})" for i, v in enumerate(self.x)] + \
                [f"(Y_{j} {float(v)!r})" for j, v in enumerate(self.y)]
        return "sat\n(" + "\n ".join(items) + ")\n"


def _sat_mask(g: Tensor, groups: list[list[int]], strict: Tensor) -> Tensor:
    """(N,) some disjunct has every row satisfied: g ≤ 0 (< 0 for strict rows), g (N, R)."""
    ok = torch.where(strict, g < 0, g <= 0)
    return torch.stack([ok[:, gr].all(dim=1) for gr in groups], dim=1).any(dim=1)


def _objective(g: Tensor, groups: list[list[int]]) -> Tensor:
    """min over disjuncts of the max over its rows (≤ 0 at a counterexample), g (N, R)."""
    return torch.stack([g[:, gr].amax(dim=1) for gr in groups], dim=1).amin(dim=1)


class _Problem:
    def __init__(self, net: nn.Module, prop: Property):
        from auditai.attack import head64

        self.prop = prop
        self.f64 = head64(net)
        self.f32 = head64(net).float()
        self.C, self.d, self.groups = prop.matrix()
        self.strict = torch.tensor([r.strict for dj in prop.disjuncts for r in dj])
        self.lo, self.hi = prop.lower, prop.upper

    @torch.no_grad()
    def replay(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(sat mask, outputs) of points x (N, n_in) clamped into the box, in float64."""
        x = torch.maximum(torch.minimum(x.double(), self.hi), self.lo)
        y = self.f64(x)
        return _sat_mask(y @ self.C.T + self.d, self.groups, self.strict), y

    def found(self, x: Tensor) -> Answer | None:
        x = torch.maximum(torch.minimum(x.double(), self.hi), self.lo)
        ok, y = self.replay(x)
        if ok.any():
            i = int(ok.nonzero()[0])
            return Answer("sat", x[i].tolist(), y[i].tolist())
        return None

    def attack(self, restarts: int = 8, steps: int = 30, seed: int = 0, deadline: float = math.inf) -> Answer | None:
        """PGD on the box (float32 search, float64 replay) from the centre and random points,
        until `deadline` (time.perf_counter())."""
        gen = torch.Generator().manual_seed(seed)
        lo, hi = self.lo.float(), self.hi.float()
        C, d = self.C.float(), self.d.float()
        x = lo + (hi - lo) * torch.rand(restarts, lo.numel(), generator=gen)
        x = torch.cat([((lo + hi) / 2)[None], x])
        step = (hi - lo) / 8
        for it in range(steps):
            x.requires_grad_(True)
            with torch.enable_grad():
                obj = _objective(self.f32(x) @ C.T + d, self.groups)
                (grad,) = torch.autograd.grad(obj.sum(), x)
            with torch.no_grad():
                hit = self.found(x.detach())
                if hit is not None:
                    return hit
                x = torch.maximum(torch.minimum(x.detach() - step * grad.sign(), hi), lo)
                if it % 10 == 9:
                    step = step / 2
                if time.perf_counter() > deadline:
                    break
        return self.found(x.detach())

    def graph(self):
        """The network's graph IR (float64), checked against the network at random inputs."""
        if getattr(self, "_graph", None) is None:
            from auditai.graph_io import read_module_graph

            self._graph = read_module_graph(self.f64, (self.prop.n_in,), "net").to(torch.float64)
        return self._graph

    def crown_cost(self) -> int:
        """Σ width² over the nonlinear nodes: the size of CROWN's intermediate passes."""
        from auditai.bounds.graph import NONLINEAR_OPS, num_elements

        g = self.graph()
        return sum(num_elements(g.nodes[n.inputs[0]].shape) ** 2 for n in g.nodes if n.op in NONLINEAR_OPS)

    def lower(self, blo: Tensor, bhi: Tensor, method: str, chunk: int = 32) -> Tensor:
        """Certified lower bounds of the rows over the boxes, minus the rounding tolerance (N, R).

        method: ibp | crown-ibp | crown (the engine's bound_box) or forward
        (`auditai.bounds.graph_forward`: forward intermediate bounds, CROWN's last pass)."""
        from auditai.bounds import bound_box
        from auditai.bounds.exactline import layer_ops
        from auditai.bounds.split import bound_tolerance

        if method == "forward":
            from auditai.bounds.graph_bounds import InputMap
            from auditai.bounds.graph_forward import bound_graph_forward

            g, parts = self.graph(), []
            for i in range(0, blo.shape[0], chunk):
                c, r = (bhi[i:i + chunk] + blo[i:i + chunk]) / 2, (bhi[i:i + chunk] - blo[i:i + chunk]) / 2
                im = InputMap(c, torch.ones(c.shape[0], dtype=torch.float64), math.inf, scale=r)
                res = bound_graph_forward(g, im, self.C, bound_upper=False)
                if res is None:  # too many perturbed inputs for forward mode
                    res = bound_box(self.f64, blo[i:i + chunk], bhi[i:i + chunk], self.C, method="crown-ibp",
                                    bound_upper=False)
                parts.append(res[0])
            lo = torch.cat(parts)
        else:
            lo, _ = bound_box(self.f64, blo, bhi, self.C, method=method, bound_upper=False)
        ops = layer_ops(self.f64, in_shape=(self.prop.n_in,))
        n = blo.shape[0]
        a = torch.maximum(blo.abs(), bhi.abs())
        Cn = self.C.expand(n, *self.C.shape)
        tol = bound_tolerance(ops, a, Cn, self.d.expand(n, -1), torch.float64)
        return lo + self.d - tol[:, None] - 1e-12 * (1 + lo.abs())

    def refuted(self, L: Tensor) -> Tensor:
        """(N,) every disjunct has a row certified > 0 on the box."""
        return torch.stack([(L[:, gr] > 0).any(dim=1) for gr in self.groups], dim=1).all(dim=1)


_CROWN_COST = 4_000_000


def decide(net: nn.Module, prop: Property, timeout: float = 60.0, max_boxes: int = 200_000,
           batch: int = 16) -> Answer:
    """Decide `prop` for `net` (inputs (N, n_in) flat, outputs (N, n_out)) within `timeout` s."""
    t0 = time.perf_counter()
    P = _Problem(net, prop)

    def done(a: Answer, phase: str, boxes: int = 0) -> Answer:
        a.time_s, a.phase, a.boxes = time.perf_counter() - t0, phase, boxes
        return a

    with torch.no_grad():
        y0 = P.f64(((P.lo + P.hi) / 2)[None])
    if y0.shape != (1, prop.n_out):
        raise VnnlibError(f"the network gives outputs of shape {tuple(y0.shape[1:])} but the property declares "
                          f"{prop.n_out} outputs Y_j")
    hit = P.attack(deadline=t0 + 0.2 * timeout)
    if hit is not None:
        return done(hit, "attack")
    blo, bhi = P.lo[None].clone(), P.hi[None].clone()
    # full CROWN only where its intermediate passes are small; forward mode otherwise
    small = P.crown_cost() <= _CROWN_COST
    split_method = "crown" if small else "forward"
    for method in ("crown-ibp", "forward") + (("crown",) if small else ()):
        if time.perf_counter() - t0 > timeout * 0.9:
            return done(Answer("timeout"), method)
        if P.refuted(P.lower(blo, bhi, method)).all():
            return done(Answer("unsat"), method, 1)
    width0 = (P.hi - P.lo).clamp_min(1e-300)
    moving = P.hi > P.lo
    if not moving.any():
        return done(Answer("unknown"), "crown", 1)
    boxes = 1
    last = 0.0  # seconds of the last round: stop before a round would pass the limit
    while blo.shape[0]:
        t_round = time.perf_counter()
        if t_round - t0 + last > timeout:
            return done(Answer("timeout"), "split", boxes)
        if boxes > max_boxes:
            return done(Answer("unknown"), "split", boxes)
        # split the first `batch` boxes along their widest perturbed coordinate (relative width)
        lo_b, hi_b, blo, bhi = blo[:batch], bhi[:batch], blo[batch:], bhi[batch:]
        rel = torch.where(moving, (hi_b - lo_b) / width0, -1.0)
        ax = rel.argmax(dim=1)
        rows = torch.arange(lo_b.shape[0])
        mid = (lo_b[rows, ax] + hi_b[rows, ax]) / 2
        left_hi, right_lo = hi_b.clone(), lo_b.clone()
        left_hi[rows, ax], right_lo[rows, ax] = mid, mid
        clo, chi = torch.cat([lo_b, right_lo]), torch.cat([left_hi, hi_b])
        boxes += clo.shape[0]
        hit = P.found((clo + chi) / 2)
        if hit is not None:
            return done(hit, "split", boxes)
        L = P.lower(clo, chi, split_method)
        keep = ~P.refuted(L)
        if ((chi - clo)[keep][:, moving] <= 1e-12 * width0[moving]).all(dim=1).any():
            return done(Answer("unknown"), "split", boxes)  # boxes down to rounding: give up
        blo, bhi = torch.cat([blo, clo[keep]]), torch.cat([bhi, chi[keep]])
        last = time.perf_counter() - t_round
    return done(Answer("unsat"), "split", boxes)


__all__ = ["Answer", "Property", "Row", "VnnlibError", "decide", "parse_vnnlib"]
