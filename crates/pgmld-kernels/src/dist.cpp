// PyTorch's own c10d, which tch 0.24 does not bind: the TCPStore that ranks meet through
// and the Gloo process group whose collectives data-parallel training uses (as
// torch.distributed with backend "gloo"). Every entry point catches every C++ exception
// (c10::DistError, gloo::IoException when a peer dies, ...) and copies its message into
// `err`, returning non-zero, so no exception crosses into Rust. Handles are heap objects
// owning intrusive pointers; the caller frees each exactly once.
//
// Compiled with -DUSE_C10D_GLOO (without it ProcessGroupGloo.hpp declares nothing) and
// the gloo headers of Debian's libgloo-dev (the wheel ships libtorch's compiled gloo but
// not its headers; only declarations are taken from them: every gloo object is made and
// used inside libtorch).

#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "ffi.h"

#include <chrono>
#include <cstdint>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

namespace {

struct Store {
  c10::intrusive_ptr<c10d::Store> store;
  int port;
};

struct Group {
  c10::intrusive_ptr<c10d::Backend> backend;
};

using pgmld::report;
using pgmld::tensor_list;

}  // namespace

extern "C" {

// A TCPStore on host:port: the server (rank 0, listening; port 0 picks a free one) or a
// client that connects to it, retrying until timeout_ms. Keys live under `prefix`, so
// several jobs can share one server.
int pgmld_store_new(const char *host, uint16_t port, int is_server, int world,
                    int64_t timeout_ms, const char *prefix, void **out, char *err,
                    size_t err_len) {
  PGMLD_TRY
  c10d::TCPStoreOptions opts;
  opts.port = port;
  opts.isServer = is_server != 0;
  opts.numWorkers = world;
  opts.waitWorkers = false;  // a rank that never comes is found by the group's rendezvous
  opts.timeout = std::chrono::milliseconds(timeout_ms);
  auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
  int bound = tcp->getPort();
  auto store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), tcp);
  *out = new Store{store, bound};
  return 0;
  PGMLD_CATCH
}

// The port a store listens on or connected to.
int pgmld_store_port(const void *store) { return static_cast<const Store *>(store)->port; }

void pgmld_store_free(void *store) { delete static_cast<Store *>(store); }

// The store's c10d::Store*, borrowed, for the NCCL plugin (nccl.cpp), which takes its own
// reference.
void *pgmld_store_raw(const void *store) {
  return static_cast<const Store *>(store)->store.get();
}

// A Gloo process group of `world` ranks meeting through `store`, this process being
// `rank`, its pairs bound to `bind_host`; collectives fail after timeout_ms.
int pgmld_gloo_new(const void *store, int rank, int world, const char *bind_host,
                   int64_t timeout_ms, void **out, char *err, size_t err_len) {
  PGMLD_TRY
  auto opts = c10d::ProcessGroupGloo::Options::create(std::chrono::milliseconds(timeout_ms));
  opts->devices.push_back(
      c10d::ProcessGroupGloo::createDeviceForHostname(std::string(bind_host)));
  opts->threads = 2;
  auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(
      static_cast<const Store *>(store)->store, rank, world, opts);
  *out = new Group{pg};
  return 0;
  PGMLD_CATCH
}

// Wraps a c10d::Backend* whose reference the caller hands over (the NCCL plugin's group)
// as a group of this shim, so the collectives below serve it as they serve Gloo's.
void pgmld_group_adopt(void *backend, void **out) {
  *out = new Group{c10::intrusive_ptr<c10d::Backend>::reclaim(static_cast<c10d::Backend *>(backend))};
}

// Frees a group (joining its threads). After a failed collective a group is unusable:
// free it and make another.
void pgmld_group_free(void *group) { delete static_cast<Group *>(group); }

// In place on every rank: tensors[i] = the sum over ranks of tensors[i] (shapes may
// differ; one coalesced collective). Blocks until done.
int pgmld_allreduce_sum(void *group, const at::Tensor *const *tensors, size_t n, char *err,
                        size_t err_len) {
  PGMLD_TRY
  at::NoGradGuard no_grad;
  auto list = tensor_list(tensors, n);
  c10d::AllreduceCoalescedOptions opts;
  opts.reduceOp = c10d::ReduceOp::SUM;
  static_cast<Group *>(group)->backend->allreduce_coalesced(list, opts)->wait();
  return 0;
  PGMLD_CATCH
}

// In place on every rank: tensors[i] = root's tensors[i] (one collective per tensor).
int pgmld_broadcast(void *group, const at::Tensor *const *tensors, size_t n, int root,
                    char *err, size_t err_len) {
  PGMLD_TRY
  at::NoGradGuard no_grad;
  auto &backend = static_cast<Group *>(group)->backend;
  for (size_t i = 0; i < n; ++i) {
    std::vector<at::Tensor> one = {*tensors[i]};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    backend->broadcast(one, opts)->wait();
  }
  return 0;
  PGMLD_CATCH
}

// Returns once every rank has called it.
int pgmld_barrier(void *group, char *err, size_t err_len) {
  PGMLD_TRY
  static_cast<Group *>(group)->backend->barrier()->wait();
  return 0;
  PGMLD_CATCH
}

}  // extern "C"
