"""Median onnxruntime latency of one ONNX file, measured in a process of its own.

    python bench/tools/ort_latency.py MODEL.onnx INPUT.npy THREADS ROUNDS  ->  prints the median in ms

One session per process, as a deployment runs it: an intra-op thread pool that finished a call keeps
spinning for a while, so two sessions in one process slow each other down on a small machine (the same file
paired against itself in one process measured 1.09x).
"""

from __future__ import annotations

import statistics
import sys
import time

import numpy as np
import onnxruntime as ort


def main(model: str, image: str, threads: int, rounds: int) -> float:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: np.load(image)}
    for _ in range(5):
        sess.run(None, feed)
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


if __name__ == "__main__":
    print(f"{main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])):.4f}")
