"""The Python bridge's cost per backend call, and the quick profile's wall time through the NumPy
kernel (python/README.md, "Performance"). A measurement, not a test:

    python python/examples/overhead.py

The same kernel, cpu-flash, runs the quick profile twice: directly (the engine calls its C table)
and wrapped as a Python backend (attncheck.Backend: every profile, supports and forward call goes
through the interpreter and back into the same C table). Both runs judge the same cases, so the
difference in wall time divided by the number of Python calls is the per-call overhead.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import attncheck  # noqa: E402
from numpy_kernel import NumpyAttention  # noqa: E402


class Counting(attncheck.Backend):
    def __init__(self, spec):
        super().__init__(spec)
        self.calls = 0

    def profile(self, dtype):
        self.calls += 1
        return super().profile(dtype)

    def supports(self, problem, dtype):
        self.calls += 1
        return super().supports(problem, dtype)

    def forward(self, problem, tensors):
        self.calls += 1
        super().forward(problem, tensors)


def timed(function):
    start, cpu_start = time.perf_counter(), time.process_time()
    result = function()
    return result, time.perf_counter() - start, time.process_time() - cpu_start


def main():
    # CPU time of the process, not wall time: the machines are shared, and the bridge's cost is
    # CPU work in this process (the engine's threads are counted alike in both runs).
    repeats = 5
    direct, wrapped, calls = [], [], 0
    for _ in range(repeats):
        report, _, cpu = timed(lambda: attncheck.run("cpu-flash", profile="quick"))
        direct.append(cpu)
        backend = Counting("cpu-flash")
        report_py, _, cpu = timed(lambda: attncheck.run(backend, profile="quick"))
        wrapped.append(cpu)
        calls = backend.calls
        assert [u["worst_ratio"] for u in report.units] == [u["worst_ratio"] for u in report_py.units]
    best_direct, best_wrapped = min(direct), min(wrapped)
    print(f"cpu-flash quick profile, CPU seconds (best of {repeats}): direct {best_direct:.2f}, through Python "
          f"{best_wrapped:.2f}; {calls} Python calls")
    print(f"overhead per call: {(best_wrapped - best_direct) / calls * 1e6:.1f} us")
    report, wall, cpu = timed(lambda: attncheck.run(NumpyAttention(), profile="quick"))
    print(f"NumPy kernel quick profile: {wall:.1f} s wall, {cpu:.1f} s CPU, {report['summary']}")


if __name__ == "__main__":
    main()
