"""`python -m auditai.demo.run --out demo_output`: what `make demo` runs (paper Fig. 1, end to end).

1. data: Fashion-MNIST from Debian's `dataset-fashion-mnist` (installed with apt-get when
   missing and run as root), else scikit-learn's digits when scikit-learn is importable, else
   shapes only; the procedural shapes always;
2. models: per data set a guided VAE (encoder e, decoder g), semantic directions, a normally
   trained head and a certified-trained one (`auditai.demo.build`), trained in parallel
   single-threaded processes, or reused from the cache (keyed by a hash of code and settings);
3. audit: the example suites (`example_suites/<dataset>/`) run through `pytest` and the auditai
   plugin, once per head, each writing a spec-sheet as JSON, Markdown and HTML (curves, image
   strips decoded along each direction) into OUT;
4. the deployment report of each audited head on a shifted test split no model saw, and the
   paper's Table 4 layout (normal / latent-certified / pixel-certified; `auditai.demo.shift`)
   in OUT/table4.md;
5. a summary table. A failed gate (the normally trained fashion head fails one unit test on
   purpose) is reported, not an error: the command exits 0 unless something broke.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from auditai.demo.build import DATASETS, MIN_R2

ROOT = Path(__file__).resolve().parents[2]
SUITES = ROOT / "example_suites"
HEADS = {"normal": "model", "certified": "certified"}  # sheet suffix → model file suffix


def ensure_fashion_mnist(log=print) -> bool:
    """Install Debian's `dataset-fashion-mnist` when it is missing and apt can (as root).

    Returns whether the IDX files are now available (folder, or $AUDITAI_FASHION_MNIST).
    """
    from auditai.demo.fashion import DEFAULT_DIR

    if os.environ.get("AUDITAI_FASHION_MNIST"):
        return Path(os.environ["AUDITAI_FASHION_MNIST"]).is_dir()
    if DEFAULT_DIR.is_dir():
        return True
    apt = shutil.which("apt-get")
    if apt is None or not hasattr(os, "geteuid") or os.geteuid() != 0:
        log(f"Fashion-MNIST is not in {DEFAULT_DIR} and apt-get cannot install it here (not "
            "root); `sudo apt-get install dataset-fashion-mnist` gives the real data set")
        return False
    log("installing dataset-fashion-mnist with apt-get ...")
    def install() -> subprocess.CompletedProcess:
        return subprocess.run([apt, "install", "-y", "-q", "dataset-fashion-mnist"], check=False,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    r = install()
    if r.returncode != 0:  # stale package lists on a fresh machine: update once and retry
        subprocess.run([apt, "update", "-q"], check=False, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        r = install()
    if r.returncode != 0:
        log(f"apt-get could not install dataset-fashion-mnist: {r.stderr.strip()[-300:]}")
    return DEFAULT_DIR.is_dir()


def _sklearn_available() -> bool:
    try:
        import sklearn  # noqa: F401
    except ImportError:
        return False
    return True


def build_one(dataset: str, out: str, size: str, seed: int, cache_dir: str,
              fashion_dir: str | None, threads: int) -> dict[str, Any]:
    """Build one data set's models (in a worker process); a JSON-able summary."""
    import torch

    torch.set_num_threads(threads)
    from auditai.demo.build import build_demo

    b = build_demo(dataset, out, size, seed, cache_dir, fashion_dir)
    # the shifted test split and the heads of Table 4 (auditai.demo.shift, paper §4.2)
    from auditai.demo.build import load_data
    from auditai.demo.shift import build_shift

    shift = build_shift(b, load_data(b.settings, fashion_dir, log=lambda _m: None), Path(out),
                        Path(cache_dir), fashion_dir)
    b.paths["shifted data"] = shift["path"]
    return {"dataset": dataset, "paths": b.paths, "times": b.times, "cache_hit": b.cache_hit,
            "shift": shift,
            "lines": b.summary_lines(), "r2": b.r2(), "accuracy": b.test_accuracy,
            "certified_accuracy": b.certified_accuracy, "certified_note": b.certified_note,
            "source": b.data_source}


def _stamp_key(dataset: str, size: str, seed: int, cache_dir: str, fashion_dir: str | None) -> str:
    """What the files in OUT were built from: the weights' cache key and the data source."""
    from auditai.demo.build import cache_key, settings_for
    from auditai.demo.fashion import DEFAULT_DIR

    source = fashion_dir or os.environ.get("AUDITAI_FASHION_MNIST") or (
        str(DEFAULT_DIR) if DEFAULT_DIR.is_dir() else "fallback")
    from auditai.demo.shift import shift_key

    key = cache_key(settings_for(dataset, size, seed))
    return json.dumps([key, cache_dir, source if dataset == "fashion" else "", shift_key(key, size)])


def up_to_date(out: Path, dataset: str, key: str) -> dict[str, Any] | None:
    """The summary of an earlier build into OUT from the same key, if all its files are there."""
    stamp = out / f"{dataset}_build.json"
    try:
        d = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return None
    if d.get("key") != key or not all(Path(p).is_file() for p in d["summary"]["paths"].values()):
        return None
    return {**d["summary"], "cache_hit": True, "up_to_date": True}


def run_suite(dataset: str, head: str, out: Path, build: dict) -> dict[str, Any]:
    """`python -m pytest example_suites/<dataset>` against one head; writes its spec-sheets."""
    model = build["paths"].get("model" if head == "normal" else "certified model")
    stem = out / f"{dataset}_{head}"
    cmd = [sys.executable, "-m", "pytest", str(SUITES / dataset), "-q", "-p", "no:randomly",
           f"--auditai-model={model}", f"--auditai-data={build['paths']['data']}",
           "-o", f"cache_dir={out / '.pytest_cache'}", "-W", "ignore::DeprecationWarning"]
    cmd += [f"--auditai-report={stem}{sfx}" for sfx in (".json", ".md", ".html")]
    if head != "normal":  # the black-box tests audit the classifier, the same for every head
        cmd += ["-k", "not pixel-cnn"]
    if build["paths"].get("train data"):
        cmd.append(f"--auditai-train-data={build['paths']['train data']}")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, check=False)
    (out / f"{dataset}_{head}_pytest.txt").write_text(" ".join(cmd) + "\n\n" + r.stdout + r.stderr)
    return {"dataset": dataset, "head": head, "rc": r.returncode, "cmd": cmd,
            "time_s": time.perf_counter() - t0, "stdout": r.stdout, "stderr": r.stderr,
            "sheet": f"{stem}.json", "reports": [f"{stem}{s}" for s in (".json", ".md", ".html")]}


def summary_rows(sheet_path: str) -> list[list[str]]:
    """(unit test, direction, ε, verified error, falsified, gate, verdict) rows of a sheet."""
    from auditai.sheet import SpecSheet

    sheet = SpecSheet.from_json(Path(sheet_path).read_text())
    rows = []
    for ut in sheet.unit_tests:
        for r in ut.rows:
            verdict = "" if not r.gated else ("pass" if r.passed else "FAIL")
            rows.append([ut.name, ut.set_name or ut.set_description, f"{r.eps:g}",
                         f"{r.clean_error:.3f}", f"{r.verified_error:.3f}",
                         f"{r.falsified_fraction:.3f}",
                         ut.threshold_text() if r.gated else "report", verdict])
    return rows


def _section(text: str, title: str) -> list[str]:
    """The lines of pytest's `=== title ===` section (up to the next `===` header)."""
    lines, inside = [], False
    for line in text.splitlines():
        if line.startswith("=") and line.rstrip("=").strip(" =") == title:
            inside = True
            continue
        if inside and line.startswith("=") and line.endswith("="):
            break
        if inside:
            lines.append(line)
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m auditai.demo.run",
                                description="The auditai demo: data, models, suites, spec-sheets.")
    p.add_argument("--out", default="demo_output", help="output folder (default demo_output)")
    p.add_argument("--size", default="full", choices=["full", "tiny"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--cache-dir", default=None,
                   help="trained-weights cache (default .cache/auditai-demo in the repository)")
    p.add_argument("--fashion-dir", default=None, help="folder with the Fashion-MNIST IDX files")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="data sets built in parallel, one thread each (default 2)")
    p.add_argument("--heads", nargs="+", default=list(HEADS), choices=list(HEADS),
                   help="which heads the suites audit (default both)")
    p.add_argument("--no-suites", action="store_true", help="build the models only")
    args = p.parse_args(argv)
    t_start = time.perf_counter()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(args.cache_dir).resolve() if args.cache_dir else ROOT / ".cache" / "auditai-demo"

    datasets = list(dict.fromkeys(args.datasets))
    if "fashion" in datasets and args.fashion_dir is None and not ensure_fashion_mnist():
        if _sklearn_available():
            print("the 'fashion' demo uses scikit-learn's 8×8 digits instead of Fashion-MNIST")
        else:
            print("neither Fashion-MNIST nor scikit-learn is available: the demo runs on the "
                  "procedural shapes only")
            datasets.remove("fashion")
    if not datasets:
        print("nothing to build")
        return 1

    # ---------------------------------------------------------------- models
    t0 = time.perf_counter()
    keys = {ds: _stamp_key(ds, args.size, args.seed, str(cache), args.fashion_dir)
            for ds in datasets}
    by_ds = {ds: b for ds in datasets if (b := up_to_date(out, ds, keys[ds])) is not None}
    for ds in by_ds:
        print(f"{ds}: the models and data in {out} are up to date (same code, settings and data)")
    todo_builds = [ds for ds in datasets if ds not in by_ds]
    jobs = max(1, min(args.jobs, len(todo_builds) or 1))
    build_args = [(ds, str(out), args.size, args.seed, str(cache), args.fashion_dir,
                   1 if jobs > 1 else (os.cpu_count() or 1)) for ds in todo_builds]
    if jobs > 1:
        print(f"building {', '.join(todo_builds)} in {jobs} parallel processes (cache {cache})")
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as ex:
            new = list(ex.map(build_one, *zip(*build_args)))
    else:
        new = [build_one(*a) for a in build_args]
    for b in new:
        by_ds[b["dataset"]] = b
        (out / f"{b['dataset']}_build.json").write_text(
            json.dumps({"key": keys[b["dataset"]], "summary": b}, indent=1))
    builds = [by_ds[ds] for ds in datasets]
    jobs = max(1, min(args.jobs, 2 * len(datasets)))
    t_models = time.perf_counter() - t0

    # ---------------------------------------------------------------- suites
    runs: list[dict] = []
    t0 = time.perf_counter()
    if not args.no_suites:
        todo = [(ds, h) for ds in datasets for h in dict.fromkeys(args.heads)
                if (by_ds[ds]["paths"].get("model") if h == "normal"
                    else by_ds[ds]["paths"].get("certified model"))]
        print(f"\nrunning the example suites through pytest ({len(todo)} runs) ...")
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(jobs) as ex:
            runs = list(ex.map(lambda a: run_suite(a[0], a[1], out, by_ds[a[0]]), todo))
    t_suites = time.perf_counter() - t0
    table = ""
    if runs:  # the deployment reports on the shifted splits and Table 4's layout
        from auditai.demo.shift import table4

        t0 = time.perf_counter()
        table = table4(out, builds)
        t_suites += time.perf_counter() - t0

    # ---------------------------------------------------------------- summary
    print("\n" + "=" * 78)
    print(f"auditai demo: models {t_models:.0f} s "
          f"({'cached' if all(b['cache_hit'] for b in builds) else 'trained'}), "
          f"suites {t_suites:.0f} s, total {time.perf_counter() - t_start:.0f} s")
    for b in builds:
        print("\n".join(b["lines"]))
    print(f"(directions with held-out R² below {MIN_R2} are kept in the model but no gated "
          "unit test uses them)")
    broken, failed_gates = [], []
    if runs:
        from tabulate import tabulate

        for r in runs:
            print(f"\n{r['dataset']} suite, {r['head']} head: pytest exit {r['rc']} "
                  f"({r['time_s']:.0f} s)")
            if r["rc"] not in (0, 1) or not Path(r["sheet"]).is_file():
                broken.append(r)
                print((r["stdout"] + r["stderr"])[-3000:])
                continue
            rows = summary_rows(r["sheet"])
            print(tabulate(rows, ["unit test", "direction", "ε", "clean err", "verified err",
                                  "falsified", "gate", ""], tablefmt="simple"))
            failed_gates += [(r["dataset"], r["head"], row[0], row[2]) for row in rows
                             if row[-1] == "FAIL"]
            if r["rc"] == 1:  # what pytest says about a failed gate
                failures = _section(r["stdout"], "FAILURES")
                if failures:
                    print("pytest says:\n  " + "\n  ".join(failures))
        print("\nspec-sheets (open the .html in a browser):")
        for r in runs:
            if r not in broken:
                print("  " + "  ".join(os.path.relpath(x) for x in r["reports"]))
    if table:
        print("\n" + table)
        print(f"(written to {os.path.relpath(out / 'table4.md')}; the deployment reports are in each "
              "spec-sheet and in *_deployment.txt)")
    print("models and data:")
    for b in builds:
        for kind, path in b["paths"].items():
            print(f"  {b['dataset']:<8} {kind:<16} {os.path.relpath(path)}")
    if failed_gates:
        print("\nfailed gates (expected: the demo shows what a failed unit test looks like; "
              "the normally trained head is not certified):")
        for ds, head, name, eps in failed_gates:
            print(f"  {ds} {head} head: unit test '{name}' at ε={eps}")
    if broken:
        print(f"\n{len(broken)} pytest run(s) did not complete (exit codes "
              f"{[r['rc'] for r in broken]}): see {out}/*_pytest.txt")
        return 1
    (out / "demo_summary.json").write_text(json.dumps({
        "builds": builds, "times": {"models_s": t_models, "suites_s": t_suites,
                                    "total_s": time.perf_counter() - t_start},
        "runs": [{k: r[k] for k in ("dataset", "head", "rc", "time_s", "reports")} for r in runs],
        "failed_gates": failed_gates}, indent=1))
    print("\ndemo finished: exit 0" + (" (the failed gates above are part of the demo)"
                                        if failed_gates else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
