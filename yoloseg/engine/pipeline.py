"""How val and predict run the model: memory format, the forward's threads, and the three-stage pipeline.

Memory format
-------------
On x86 CPUs (AVX2 and AVX-512 builds of torch) the model and its inputs use ``torch.channels_last``: the
convolutions then run oneDNN's NHWC kernels without reordering every activation, which makes the eager
forward of yolo11n-seg about 1.3x faster on an AVX2 machine (measured: docs/predict.md). Other CPUs
(ARM, builds without those ISAs) keep the contiguous layout, where this was not measured. CUDA and other
devices keep their usual layout. The results are the same numbers up to float32 summation order.

Threads
-------
Three stages overlap: *load* (decode + letterbox the next batch), *forward* (the model, main thread) and
*finish* (NMS, masks, metrics or Results, drawing and writing of the previous batch).

* ``workers`` means the same in train, val and predict: how many loaders prepare input beside the
  forward (train and val: DataLoader worker processes; predict: threads, since its sources can be arrays,
  PIL images or sequential videos). ``workers=0`` loads in the main thread, between forwards. Capped at the
  number of cores.
* The finish stage is one thread (results and files stay in order); it and every loader thread run their
  torch and kernel work single-threaded.
* The forward gets ``forward_threads(cores)`` intra-op threads, ``cores`` being the CPUs this process may
  run on (its affinity mask): ``cores - max(1, cores // 4)``, at least 1 (1 -> 1, 2 -> 1, 4 -> 3, 8 -> 6,
  16 -> 12). The loading and finishing work of yolo11n-seg is about a quarter of the forward's CPU time,
  so a quarter of the cores, and never less than one, is left to the pipeline. An OpenMP forward whose
  threads share cores with other busy threads waits at every barrier for a thread that is not running
  (measured on 2 cores: 2 forward threads beside the pipeline were several times slower than 1), so the
  forward never counts on the pipeline's core. The rule depends on the machine and the settings only,
  never on the current load. ``OMP_NUM_THREADS``, when set, is the forward's thread count instead.
"""

from __future__ import annotations

import os
import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import torch

__all__ = [
    "FinishStage",
    "forward_threads",
    "inference_memory_format",
    "loader_workers",
    "memory_format",
    "prefetch",
    "single_threaded",
    "thread_plan",
    "to_memory_format",
    "usable_cores",
]


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask; the CPU count where that is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _omp_request() -> int | None:
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(env) if env.isdigit() and int(env) > 0 else None


def forward_threads(cores: int | None = None) -> int:
    """Intra-op threads for the forward (the rule in the module docstring): ``OMP_NUM_THREADS`` when set,
    else ``cores - max(1, cores // 4)`` of the usable cores, at least 1."""
    req = _omp_request()
    if req is not None:
        return req
    n = usable_cores() if cores is None else max(int(cores), 1)
    return max(1, n - max(1, n // 4))


def loader_workers(workers, cores: int | None = None) -> int:
    """``workers`` as a count of loaders: an int >= 0, capped at the number of usable cores."""
    try:
        w = int(workers or 0)
    except (TypeError, ValueError):
        raise ValueError(f"workers must be an int >= 0, got {workers!r}") from None
    if w < 0:
        raise ValueError(f"workers must be an int >= 0, got {workers!r}")
    return min(w, usable_cores() if cores is None else max(int(cores), 1))


@contextmanager
def thread_plan(device):
    """Sets the forward's thread count (:func:`forward_threads`) for a CPU run and restores the previous
    one afterwards; does nothing for other devices."""
    if torch.device(device).type != "cpu":
        yield None
        return
    before = torch.get_num_threads()
    n = forward_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:  # also resets the default that pipeline threads lowered for threads started later
        torch.set_num_threads(before)


def single_threaded() -> None:
    """Called first in a pipeline thread: its torch ops and yoloseg kernels use one thread.

    With OpenMP (torch's CPU builds) the thread count is per calling thread once a thread has run a
    parallel region, so the forward's threads in the main thread are unaffected; :func:`thread_plan`
    sets the main thread's count before any pipeline thread starts.
    """
    torch.set_num_threads(1)


def inference_memory_format(device) -> torch.memory_format:
    """``torch.channels_last`` on x86 CPUs with AVX2 or AVX-512 kernels, else ``torch.contiguous_format``
    (see the module docstring)."""
    if torch.device(device).type != "cpu":
        return torch.contiguous_format
    try:
        isa = str(torch.backends.cpu.get_cpu_capability()).upper()
    except Exception:  # noqa: BLE001 - an old torch without the query: keep the default layout
        return torch.contiguous_format
    return torch.channels_last if isa.startswith("AVX") and isa != "AVX" else torch.contiguous_format


def to_memory_format(model, fmt: torch.memory_format):
    """The module's 4-D parameters and buffers in ``fmt`` (in place); returns the module."""
    if isinstance(model, torch.nn.Module) and fmt is not torch.contiguous_format:
        model.to(memory_format=fmt)
    return model


@contextmanager
def memory_format(model, fmt: torch.memory_format):
    """The module in ``fmt`` while the block runs (the trainer's EMA model during validation); afterwards its
    4-D parameters and buffers are the very tensors they were before, in their own layout."""
    if not isinstance(model, torch.nn.Module) or fmt is torch.contiguous_format:
        yield model
        return
    # the original tensors themselves come back afterwards (not copies): whoever holds them (the EMA's
    # cached parameter list) keeps updating the module's own weights
    params = [(p, p.data) for m in model.modules() for p in m._parameters.values() if p is not None and p.dim() == 4]
    buffers = [(m, k, b) for m in model.modules() for k, b in m._buffers.items() if b is not None and b.dim() == 4]
    model.to(memory_format=fmt)
    try:
        yield model
    finally:
        for p, data in params:
            p.data = data
        for m, k, b in buffers:
            m._buffers[k] = b


class FinishStage:
    """One background thread that runs ``fn(*args)`` jobs in submission order (the finish stage).

    ``submit`` returns a Future; at most ``depth`` jobs wait, so a fast forward never runs far ahead of a
    slow finish. ``enabled=False`` runs each job at once in the caller's thread (same results, no overlap).
    """

    def __init__(self, enabled: bool = True, depth: int = 1, name: str = "yoloseg-finish"):
        self.enabled = bool(enabled)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name, initializer=single_threaded) if enabled else None
        self._slots = threading.BoundedSemaphore(max(int(depth), 1) + 1) if enabled else None

    def submit(self, fn, *args) -> Future:
        if not self.enabled:
            f: Future = Future()
            try:
                f.set_result(fn(*args))
            except BaseException as e:  # noqa: BLE001 - delivered through the future, as the thread does
                f.set_exception(e)
            return f
        self._slots.acquire()

        def job():
            try:
                return fn(*args)
            finally:
                self._slots.release()

        return self._pool.submit(job)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def prefetch(iterable, enabled: bool = True, depth: int = 2, name: str = "yoloseg-load"):
    """Iterate ``iterable`` in a background thread, up to ``depth`` items ahead (the load stage).

    Exceptions raised by the iterable come out of this generator at the item where they happened. Closing
    the generator early stops the thread after the item it is working on.
    """
    if not enabled:
        yield from iterable
        return
    q: queue.Queue = queue.Queue(maxsize=max(int(depth), 1))
    stop = threading.Event()
    done = object()

    def run():
        single_threaded()
        try:
            for item in iterable:
                while not stop.is_set():
                    try:
                        q.put((True, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((True, done))
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
            q.put((False, e))

    t = threading.Thread(target=run, name=name, daemon=True)
    t.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is done:
                return
            yield item
    finally:
        stop.set()
        while t.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                pass
            t.join(timeout=0.05)
