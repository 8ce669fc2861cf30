"""`python -m auditai.demo.run --out demo_output`: what `make demo` runs.

Builds (or reuses from the cache) the shapes and Fashion-MNIST demo models and prints the
held-out R² of every direction. Running the example suites through pytest and writing the
spec-sheets is the next stage of the demo (issue 8, items 5–6).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

from auditai.demo.build import DATASETS, MIN_R2, build_demo


def ensure_fashion_mnist() -> None:
    """Install Debian's `dataset-fashion-mnist` when it is missing and apt can (as root)."""
    from auditai.demo.fashion import DEFAULT_DIR

    if DEFAULT_DIR.is_dir() or os.environ.get("AUDITAI_FASHION_MNIST"):
        return
    apt = shutil.which("apt-get")
    if apt is None or not hasattr(os, "geteuid") or os.geteuid() != 0:
        print(f"Fashion-MNIST is not in {DEFAULT_DIR} and apt cannot install it here "
              "(`sudo apt-get install dataset-fashion-mnist`); the demo falls back to "
              "scikit-learn's digits if scikit-learn is installed")
        return
    print("installing dataset-fashion-mnist with apt-get ...")
    r = subprocess.run([apt, "install", "-y", "-q", "dataset-fashion-mnist"], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        print(f"apt-get could not install dataset-fashion-mnist: {r.stderr.strip()[-300:]}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m auditai.demo.run", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="demo_output", help="output folder (default demo_output)")
    p.add_argument("--size", default="full", choices=["full", "tiny"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--cache-dir", default=None, help="trained-weights cache (default OUT/cache)")
    p.add_argument("--fashion-dir", default=None, help="folder with the Fashion-MNIST IDX files")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    if "fashion" in args.datasets and args.fashion_dir is None:
        ensure_fashion_mnist()
    builds = [build_demo(ds, args.out, args.size, args.seed, args.cache_dir, args.fashion_dir)
              for ds in args.datasets]
    print(f"\ndemo models built in {time.perf_counter() - t0:.1f} s, in {args.out}/")
    for b in builds:
        print("\n".join(b.summary_lines()))
        for kind, path in b.paths.items():
            print(f"  {kind:<11} {path}")
    print(f"(directions with held-out R² below {MIN_R2} are kept for the spec-sheet but are "
          "not used by gated tests)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
