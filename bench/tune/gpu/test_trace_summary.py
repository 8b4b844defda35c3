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

    def test_a_cpu_trace_counts_the_ops_a_gpu_would_launch(self):
        op = lambda name, ts, dur, tid=1: {"cat": "cpu_op", "name": name, "ts": ts, "dur": dur, "tid": tid}
        events = [
            # aten::linear -> aten::t (a view) + aten::addmm: one kernel.
            op("aten::linear", 0, 10), op("aten::t", 1, 1), op("aten::addmm", 3, 6),
            # autocast's cast: aten::to -> aten::_to_copy -> empty_strided + copy_: one kernel.
            op("aten::to", 20, 10), op("aten::_to_copy", 21, 8), op("aten::empty_strided", 22, 1), op("aten::copy_", 24, 4),
            # Another thread (the backward engine on a GPU run): counted too.
            op("aten::mm", 5, 2, tid=2),
        ]
        s = summarise(events, steps=1)
        self.assertEqual(s["kernel_like_ops"], 3)  # addmm, copy_, mm
        self.assertEqual(s["casts"], 1)
        self.assertEqual({o["name"] for o in s["top_kernel_like"]}, {"aten::addmm", "aten::copy_", "aten::mm"})
        self.assertIn("would launch a kernel 3", markdown(s, "cpu"))

    def test_a_foreach_op_is_one_launch_and_a_scalar_copy_none(self):
        op = lambda name, ts, dur, dims=None: {"cat": "cpu_op", "name": name, "ts": ts, "dur": dur, "tid": 1, **({"args": {"Input Dims": dims}} if dims is not None else {})}
        events = [
            # On the CPU _foreach_mul_ loops over mul_: one multi-tensor launch on a GPU.
            op("aten::_foreach_mul_", 0, 10), op("aten::mul_", 1, 2), op("aten::mul_", 4, 2),
            # add_ with a wrapped number: the 0-dim tensor's copy is no kernel.
            op("aten::add_", 20, 10, [[2, 3], []]), op("aten::to", 21, 4), op("aten::_to_copy", 21, 4, [[]]), op("aten::copy_", 22, 2, [[], []]),
        ]
        s = summarise(events, steps=1)
        self.assertEqual(s["kernel_like_ops"], 2)  # _foreach_mul_, add_
        self.assertEqual(s["casts"], 0)



if __name__ == "__main__":
    unittest.main()
