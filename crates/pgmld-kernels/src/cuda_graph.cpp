// CUDA graphs (at::cuda::CUDAGraph, what torch.cuda.graph wraps) for the training step, as a
// plugin: libpgmld_cuda_graph.so, which pgmld loads only when a CUDA run asks for graphs
// (training argument cuda_graphs; pgmld_kernels::cuda_graph).
//
// Why a plugin: CUDAGraph.h needs the CUDA runtime's headers and the object needs
// libtorch_cuda.so, which must not become a load-time dependency of a binary that runs on
// machines without CUDA. Unlike the NCCL plugin it needs no header beyond the
// nvidia-cuda-runtime wheel that the lean CPU install has too, so scripts/build-cuda-plugins.sh
// builds it anywhere (CI compiles it; only a GPU machine can run it).
//
// A small model's training step is a few hundred kernels of a few microseconds each: the
// GPU waits on the CPU that launches them. Captured once, a step is one graph launch.
//
// Every entry point catches C++ exceptions and copies the message into err, returning
// non-zero, so no exception crosses into Rust.

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAStream.h>

#include "ffi.h"

#include <exception>

using pgmld::report;

extern "C" {

// The plugin's interface version; pgmld refuses a plugin of another.
int pgmld_cuda_graph_abi_version() { return 1; }

// Makes a new stream of CUDA device `device` this thread's current stream (graphs are
// captured on a stream other than the default one, and the steps that run before a capture
// must run on the stream the capture uses: cuBLAS keeps a workspace per stream), after the
// work queued on the stream it replaces is done. *token receives that stream, which
// pgmld_cuda_stream_leave restores.
int pgmld_cuda_stream_enter(int device, void **token, char *err, size_t err_len) {
  PGMLD_TRY
  auto index = static_cast<c10::DeviceIndex>(device);
  auto before = c10::cuda::getCurrentCUDAStream(index);
  auto side = c10::cuda::getStreamFromPool(/*isHighPriority=*/false, index);
  before.synchronize();
  c10::cuda::setCurrentCUDAStream(side);
  *token = new c10::cuda::CUDAStream(before);
  return 0;
  PGMLD_CATCH
}

// Waits for the current stream's work, then makes the stream pgmld_cuda_stream_enter saved
// in `token` current again and frees the token.
int pgmld_cuda_stream_leave(void *token, char *err, size_t err_len) {
  auto *before = static_cast<c10::cuda::CUDAStream *>(token);
  PGMLD_TRY
  c10::cuda::getCurrentCUDAStream(before->device_index()).synchronize();
  c10::cuda::setCurrentCUDAStream(*before);
  delete before;
  return 0;
  PGMLD_CATCH
}

// Begins capturing the current stream into a new graph with a private memory pool (so
// its activations stay where the replays find them): every kernel this thread (and the
// autograd engine, for this stream) queues from now on is recorded, not run, until
// pgmld_cuda_graph_end. Thread-local capture mode (torch.cuda.graph(...,
// capture_error_mode="thread_local")): other threads of the daemon may go on using CUDA.
// The default CUDA generator is registered, so dropout masks follow the seed set before
// each replay. *out receives the graph, which pgmld_cuda_graph_free frees.
int pgmld_cuda_graph_begin(void **out, char *err, size_t err_len) {
  PGMLD_TRY
  auto graph = new at::cuda::CUDAGraph();
  try {
    graph->capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
  } catch (...) {
    delete graph;
    throw;
  }
  *out = graph;
  return 0;
  PGMLD_CATCH
}

// Ends the capture pgmld_cuda_graph_begin started and instantiates the graph. Call it
// even when the captured code failed: it ends the stream's capture state either way (and
// then fails, the graph unusable), and clears CUDA's last error, which the next kernel
// launch's check would otherwise report as its own.
int pgmld_cuda_graph_end(void *graph, char *err, size_t err_len) {
  try {
    static_cast<at::cuda::CUDAGraph *>(graph)->capture_end();
    return 0;
  } catch (const std::exception &e) {
    (void)cudaGetLastError();
    return report(e.what(), err, err_len);
  } catch (...) {
    (void)cudaGetLastError();
    return report("unknown C++ exception", err, err_len);
  }
}

// Runs the captured kernels again on the current stream, over the same memory.
int pgmld_cuda_graph_replay(void *graph, char *err, size_t err_len) {
  PGMLD_TRY
  static_cast<at::cuda::CUDAGraph *>(graph)->replay();
  return 0;
  PGMLD_CATCH
}

// Frees a graph and returns its memory pool.
void pgmld_cuda_graph_free(void *graph) {
  try {
    delete static_cast<at::cuda::CUDAGraph *>(graph);
  } catch (...) {
  }
}

}  // extern "C"
