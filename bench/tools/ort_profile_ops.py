"""Where onnxruntime spends the forward: total kernel time per operator type, from its own profiler.

    python bench/tools/ort_profile_ops.py MODEL.onnx [MODEL2.onnx ...] [--threads N] [--runs R]

Each model runs R times (after 3 warm-up runs) on a random 640x640 input in a session with profiling on;
the per-node ``kernel_time`` events of the timed runs are summed by operator type and printed as ms per run,
largest first, one column per model. Used to show what int8 changes (and what it does not) per op type.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections import defaultdict

import numpy as np
import onnxruntime as ort


def profile(path: str, threads: int, runs: int) -> dict[str, float]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(tempfile.mkdtemp(prefix="ort-prof-"), "p")
    sess = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else s for d, s in zip(inp.shape, (1, 3, 640, 640))]
    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    for _ in range(3 + runs):
        sess.run(None, {inp.name: x})
    events = json.load(open(sess.end_profiling()))
    runs_seen, per_op = 0, defaultdict(float)
    for e in events:
        if e.get("cat") == "Session" and e.get("name") == "model_run":
            runs_seen += 1
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and runs_seen >= 3:
            per_op[e["args"].get("op_name", "?")] += e["dur"] / 1e3
    return {k: v / runs for k, v in per_op.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    cols = [profile(m, a.threads, a.runs) for m in a.models]
    ops = sorted(set().union(*cols), key=lambda k: -max(c.get(k, 0) for c in cols))
    print("| op type | " + " | ".join(os.path.basename(m) + " ms" for m in a.models) + " |")
    print("|---|" + "---|" * len(a.models))
    for op in ops:
        print(f"| {op} | " + " | ".join(f"{c.get(op, 0):.2f}" for c in cols) + " |")
    print("| total | " + " | ".join(f"{sum(c.values()):.2f}" for c in cols) + " |")


if __name__ == "__main__":
    main()
