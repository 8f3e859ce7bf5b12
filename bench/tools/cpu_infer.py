"""Forward latency and peak RSS of one model on one backend, measured in a process of its own.

    python bench/tools/cpu_infer.py KIND PATH THREADS BATCH ROUNDS  ->  prints "median_ms peak_rss_mb"

KIND: ``torch`` (a .pt checkpoint, fused, eager float32), ``ort`` (an .onnx file on onnxruntime's CPU provider),
``openvino`` (an OpenVINO IR folder or .xml, CPU plugin, latency hint). THREADS 0 means the runtime's default
(all cores). The input is ``BATCH`` x 3 x 640 x 640 random values in [0, 1] (seed 0); the file's own input size
is used when it is static. One session per process, as a deployment runs it (idle intra-op threads of a second
session in the same process would spin on the cores the measured one needs). Peak RSS is ``ru_maxrss`` of this
process after loading the model and running it.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time

import numpy as np


def _runner(kind: str, path: str, threads: int, batch: int):
    if kind == "torch":
        import torch

        if threads:
            torch.set_num_threads(threads)
        from yoloseg.checkpoints import load_checkpoint

        model = load_checkpoint(path)[0].float().fuse().eval()
        x = torch.from_numpy(np.random.default_rng(0).random((batch, 3, 640, 640), dtype=np.float32))

        def run():
            with torch.inference_mode():
                model(x)

        return run
    if kind == "ort":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        sess = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        inp = sess.get_inputs()[0]
        shape = [d if isinstance(d, int) else s for d, s in zip(inp.shape, (batch, 3, 640, 640))]
        x = np.random.default_rng(0).random(shape, dtype=np.float32)
        return lambda: sess.run(None, {inp.name: x})
    if kind == "openvino":
        import openvino as ov

        from yoloseg.engine.backends import openvino_xml

        core = ov.Core()
        model = core.read_model(str(openvino_xml(path)))
        cfg = {"PERFORMANCE_HINT": "LATENCY"}
        if threads:
            cfg["INFERENCE_NUM_THREADS"] = threads
        compiled = core.compile_model(model, "CPU", cfg)
        req = compiled.create_infer_request()
        ps = model.inputs[0].get_partial_shape()
        shape = [d.get_length() if d.is_static else s for d, s in zip(ps, (batch, 3, 640, 640))]
        x = np.random.default_rng(0).random(shape, dtype=np.float32)
        return lambda: req.infer({0: x})
    raise SystemExit(f"unknown kind {kind!r}")


def main(kind: str, path: str, threads: int, batch: int, rounds: int) -> tuple[float, float]:
    run = _runner(kind, path, threads, batch)
    for _ in range(3):
        run()
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return statistics.median(times) * 1e3, rss_mb


if __name__ == "__main__":
    ms, rss = main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]))
    print(f"{ms:.4f} {rss:.1f}")
