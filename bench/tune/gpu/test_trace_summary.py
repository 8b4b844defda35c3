"""trace_summary.py on a hand-made trace: python3 bench/tune/gpu/test_trace_summary.py"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from trace_summary import markdown, summarise, union_length  # noqa: E402


class TraceSummaryTest(unittest.TestCase):
    def test_union_length_merges_overlaps(self):
        self.assertEqual(union_length([(0, 2), (1, 3), (5, 6)]), 4)
        self.assertEqual(union_length([(0, 10), (2, 3)]), 10)
        self.assertEqual(union_length([]), 0)

    def test_kernels_busy_time_casts_and_launches_per_step(self):
        events = [
            {"cat": "kernel", "name": "gemm", "ts": 0, "dur": 4},
            {"cat": "kernel", "name": "gemm", "ts": 2, "dur": 4},
            {"cat": "kernel", "name": "direct_copy_kernel_cuda", "ts": 10, "dur": 2},
            {"cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": 0, "dur": 1},
            {"cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": 1, "dur": 1},
            {"cat": "cpu_op", "name": "aten::mm", "ts": 0, "dur": 3},
        ]
        s = summarise(events, steps=2)
        self.assertEqual(s["kernels"], 1.5)
        self.assertAlmostEqual(s["gpu_busy_ms"], 0.004)  # (6 + 2) µs over 2 steps
        self.assertAlmostEqual(s["gpu_busy_fraction"], 8 / 12)
        self.assertEqual(s["cast_kernels"], 0.5)
        self.assertEqual(s["top_kernels"][0]["name"], "gemm")
        self.assertEqual(s["runtime_calls"]["cudaLaunchKernel"]["count"], 1)
        self.assertIn("GPU busy", markdown(s, "fp32"))

    def test_a_cpu_trace_has_no_kernel_figures(self):
        s = summarise([{"cat": "cpu_op", "name": "aten::mm", "ts": 0, "dur": 3}])
        self.assertNotIn("kernels", s)
        self.assertIn("CPU ops 1", markdown(s, "cpu"))


if __name__ == "__main__":
    unittest.main()
