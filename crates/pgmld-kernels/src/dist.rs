//! PyTorch's c10d for data-parallel training, through `src/dist.cpp`: the TCPStore ranks
//! meet through ([`Store`]) and a process group ([`ProcessGroup`]) whose collectives
//! (all-reduce, broadcast, barrier) are the ones `torch.distributed` runs with backend
//! `gloo` (CPU tensors) or `nccl` (CUDA tensors; [`ProcessGroup::nccl`], from the plugin of
//! [`crate::nccl`]). No collective is written here: each call is one c10d operation.
//!
//! Failures (a rank that never comes, a peer that dies mid-collective, a timeout) come
//! back as [`KernelError`]s; after one, the group is unusable: drop it and make another.

use std::ffi::{c_char, c_void, CString};
use std::ptr::NonNull;
use std::time::Duration;

use tch::Tensor;

use crate::{call, handles, KernelError};

extern "C" {
    fn pgmld_store_new(
        host: *const c_char,
        port: u16,
        is_server: i32,
        world: i32,
        timeout_ms: i64,
        prefix: *const c_char,
        out: *mut *mut c_void,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
    fn pgmld_store_port(store: *const c_void) -> i32;
    fn pgmld_store_free(store: *mut c_void);
    fn pgmld_store_raw(store: *const c_void) -> *mut c_void;
    fn pgmld_group_adopt(backend: *mut c_void, out: *mut *mut c_void);
    fn pgmld_gloo_new(
        store: *const c_void,
        rank: i32,
        world: i32,
        bind_host: *const c_char,
        timeout_ms: i64,
        out: *mut *mut c_void,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
    fn pgmld_group_free(group: *mut c_void);
    fn pgmld_allreduce_sum(
        group: *mut c_void,
        tensors: *const *const c_void,
        n: usize,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
    fn pgmld_broadcast(
        group: *mut c_void,
        tensors: *const *const c_void,
        n: usize,
        root: i32,
        err: *mut c_char,
        err_len: usize,
    ) -> i32;
    fn pgmld_barrier(group: *mut c_void, err: *mut c_char, err_len: usize) -> i32;
}

fn c_string(what: &str, s: &str) -> Result<CString, KernelError> {
    CString::new(s).map_err(|_| KernelError(format!("{what} {s:?} contains a NUL byte")))
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX).max(1)
}

/// A c10d TCPStore: rank 0 serves it, the other ranks connect to it; keys live under a
/// prefix, so jobs can share a server.
pub struct Store {
    ptr: NonNull<c_void>,
}

// SAFETY: a c10d Store is used from one thread at a time here (it is thread-safe in
// libtorch too); the handle only owns an intrusive pointer.
unsafe impl Send for Store {}

impl Store {
    fn open(
        host: &str,
        port: u16,
        server: bool,
        world: usize,
        timeout: Duration,
        prefix: &str,
    ) -> Result<Store, KernelError> {
        let (host, prefix) = (c_string("host", host)?, c_string("prefix", prefix)?);
        let world = i32::try_from(world).map_err(|_| KernelError(format!("world size {world}")))?;
        let mut out = std::ptr::null_mut();
        // SAFETY: the strings outlive the call; `out` receives a new handle on success.
        call(|err, len| unsafe {
            pgmld_store_new(
                host.as_ptr(),
                port,
                server as i32,
                world,
                millis(timeout),
                prefix.as_ptr(),
                &mut out,
                err,
                len,
            )
        })?;
        NonNull::new(out)
            .map(|ptr| Store { ptr })
            .ok_or_else(|| KernelError("the store was not created".into()))
    }

    /// The server, listening on `host:port` (port 0: a free one, see [`Store::port`]).
    pub fn serve(
        host: &str,
        port: u16,
        world: usize,
        timeout: Duration,
        prefix: &str,
    ) -> Result<Store, KernelError> {
        Store::open(host, port, true, world, timeout, prefix)
    }

    /// A client of the server at `host:port`, retrying for up to `timeout`.
    pub fn connect(
        host: &str,
        port: u16,
        world: usize,
        timeout: Duration,
        prefix: &str,
    ) -> Result<Store, KernelError> {
        Store::open(host, port, false, world, timeout, prefix)
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        // SAFETY: a live store handle.
        u16::try_from(unsafe { pgmld_store_port(self.ptr.as_ptr()) }).unwrap_or(0)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // SAFETY: the handle is freed once, here.
        unsafe { pgmld_store_free(self.ptr.as_ptr()) }
    }
}

/// A c10d process group (Gloo or NCCL): this process is `rank` of `world`. Every rank must
/// issue the same collectives in the same order, so a group is `Send` (it may move to a
/// training thread) but not `Sync`.
pub struct ProcessGroup {
    ptr: NonNull<c_void>,
    rank: usize,
    world: usize,
}

// SAFETY: the group is used by one thread at a time (`&mut self` for collectives).
unsafe impl Send for ProcessGroup {}

impl ProcessGroup {
    /// Joins the group of `world` ranks meeting through `store` as `rank`, its connections
    /// bound to `bind_host` (an address of this machine the other ranks can reach);
    /// returns once every rank has joined, or fails after `timeout`, which also bounds
    /// every collective.
    pub fn gloo(
        store: &Store,
        rank: usize,
        world: usize,
        bind_host: &str,
        timeout: Duration,
    ) -> Result<ProcessGroup, KernelError> {
        if world == 0 || rank >= world {
            return Err(KernelError(format!("rank {rank} of a group of {world}")));
        }
        let bind = c_string("bind host", bind_host)?;
        let mut out = std::ptr::null_mut();
        // SAFETY: `store` is a live handle; `out` receives a new group on success.
        call(|err, len| unsafe {
            pgmld_gloo_new(
                store.ptr.as_ptr(),
                rank as i32,
                world as i32,
                bind.as_ptr(),
                millis(timeout),
                &mut out,
                err,
                len,
            )
        })?;
        NonNull::new(out)
            .map(|ptr| ProcessGroup { ptr, rank, world })
            .ok_or_else(|| KernelError("the process group was not created".into()))
    }

    /// Joins the NCCL group (c10d's `ProcessGroupNCCL`) of `world` ranks meeting through
    /// `store` as `rank`, on CUDA device `device`, from the plugin `libpgmld_nccl.so`
    /// ([`crate::nccl`]); its collectives take tensors on that device and fail after
    /// `timeout` (with [`crate::nccl::ENV_DEFAULTS`] set). NCCL allows one rank per GPU.
    pub fn nccl(
        store: &Store,
        rank: usize,
        world: usize,
        device: usize,
        timeout: Duration,
    ) -> Result<ProcessGroup, KernelError> {
        if world == 0 || rank >= world {
            return Err(KernelError(format!("rank {rank} of a group of {world}")));
        }
        let device = i32::try_from(device).map_err(|_| KernelError(format!("cuda:{device}")))?;
        let plugin = crate::nccl::plugin()?;
        let mut backend = std::ptr::null_mut();
        // SAFETY: `store` is a live handle whose c10d::Store the plugin takes a reference
        // to; `backend` receives a released c10d::Backend* on success.
        call(|err, len| unsafe {
            let raw = pgmld_store_raw(store.ptr.as_ptr());
            (plugin.new_group)(
                raw,
                rank as i32,
                world as i32,
                device,
                millis(timeout),
                &mut backend,
                err,
                len,
            )
        })?;
        if backend.is_null() {
            return Err(KernelError("the NCCL process group was not created".into()));
        }
        let mut out = std::ptr::null_mut();
        // SAFETY: `backend` carries one reference, which the new group handle takes over.
        unsafe { pgmld_group_adopt(backend, &mut out) };
        NonNull::new(out)
            .map(|ptr| ProcessGroup { ptr, rank, world })
            .ok_or_else(|| KernelError("the NCCL process group was not created".into()))
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// How many ranks the group has.
    pub fn world(&self) -> usize {
        self.world
    }

    /// In place on every rank: each tensor becomes its sum over the ranks (one coalesced
    /// collective for the whole list; shapes may differ; CPU tensors for Gloo, tensors on
    /// the group's device for NCCL).
    pub fn all_reduce_sum_(&mut self, tensors: &[Tensor]) -> Result<(), KernelError> {
        if tensors.is_empty() {
            return Ok(());
        }
        let h = handles(tensors);
        // SAFETY: live tensor handles borrowed for the call; the group is live.
        call(|err, len| unsafe {
            pgmld_allreduce_sum(self.ptr.as_ptr(), h.as_ptr(), h.len(), err, len)
        })
    }

    /// In place on every rank: each tensor becomes rank `root`'s.
    pub fn broadcast_(&mut self, tensors: &[Tensor], root: usize) -> Result<(), KernelError> {
        let h = handles(tensors);
        // SAFETY: live tensor handles borrowed for the call; the group is live.
        call(|err, len| unsafe {
            pgmld_broadcast(self.ptr.as_ptr(), h.as_ptr(), h.len(), root as i32, err, len)
        })
    }

    /// Returns once every rank has called it.
    pub fn barrier(&mut self) -> Result<(), KernelError> {
        // SAFETY: the group is live.
        call(|err, len| unsafe { pgmld_barrier(self.ptr.as_ptr(), err, len) })
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: the handle is freed once, here.
        unsafe { pgmld_group_free(self.ptr.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    const T: Duration = Duration::from_secs(20);

    /// Runs `f(rank, group)` on `world` threads, each a rank of one group.
    fn ranks<R: Send + 'static>(
        world: usize,
        f: impl Fn(usize, ProcessGroup) -> R + Send + Sync + Clone + 'static,
    ) -> Vec<R> {
        let server = Store::serve("127.0.0.1", 0, world, T, "test/").unwrap();
        let port = server.port();
        assert!(port > 0);
        let mut threads = Vec::new();
        for rank in 1..world {
            let f = f.clone();
            threads.push(std::thread::spawn(move || {
                let store = Store::connect("127.0.0.1", port, world, T, "test/").unwrap();
                let pg = ProcessGroup::gloo(&store, rank, world, "127.0.0.1", T).unwrap();
                f(rank, pg)
            }));
        }
        let pg = ProcessGroup::gloo(&server, 0, world, "127.0.0.1", T).unwrap();
        let mut out = vec![f(0, pg)];
        out.extend(threads.into_iter().map(|t| t.join().unwrap()));
        out
    }

    #[test]
    fn all_reduce_sums_tensors_of_any_shape_and_broadcast_copies_the_root() {
        let out = ranks(3, |rank, mut pg| {
            assert_eq!((pg.rank(), pg.world()), (rank, 3));
            let r = (rank + 1) as f64;
            let a = Tensor::full([2, 3], r, (Kind::Float, Device::Cpu));
            let b = Tensor::arange(5, (Kind::Float, Device::Cpu)) * r;
            pg.all_reduce_sum_(&[a.shallow_clone(), b.shallow_clone()]).unwrap();
            let c = Tensor::full([4], r, (Kind::Float, Device::Cpu));
            pg.broadcast_(&[c.shallow_clone()], 2).unwrap();
            pg.barrier().unwrap();
            (
                Vec::<f32>::try_from(a.flatten(0, -1)).unwrap(),
                Vec::<f32>::try_from(b).unwrap(),
                Vec::<f32>::try_from(c).unwrap(),
            )
        });
        for (a, b, c) in out {
            assert_eq!(a, vec![6.0; 6]);
            assert_eq!(b, vec![0.0, 6.0, 12.0, 18.0, 24.0]);
            assert_eq!(c, vec![3.0; 4], "rank 2's values");
        }
    }

    #[test]
    fn a_rank_that_never_comes_is_an_error_not_a_hang() {
        let server = Store::serve("127.0.0.1", 0, 2, T, "lonely/").unwrap();
        let e = ProcessGroup::gloo(&server, 0, 2, "127.0.0.1", Duration::from_millis(1500))
            .err()
            .expect("the group cannot form");
        assert!(e.0.contains("timeout") || e.0.contains("Timeout"), "{e}");
        assert!(
            ProcessGroup::gloo(&server, 2, 2, "127.0.0.1", T).is_err(),
            "rank outside the group"
        );
        let e = Store::connect("127.0.0.1", 1, 2, Duration::from_millis(500), "x/").err().unwrap();
        assert!(!e.0.is_empty());
        // Checked before the NCCL plugin is looked for.
        let e = ProcessGroup::nccl(&server, 2, 2, 0, T).err().expect("rank outside the group");
        assert!(e.0.contains("rank 2 of a group of 2"), "{e}");
    }

    /// NCCL on every CUDA device (one rank each, at most 4, as NCCL allows one rank per
    /// GPU): sums, broadcast from the last rank, barrier. Run by the GPU check
    /// (bench/tune/gpu/run.sh) with the plugin built there, `PGMLD_NCCL_PLUGIN` naming it.
    #[test]
    #[ignore = "needs a CUDA device and libpgmld_nccl.so (PGMLD_NCCL_PLUGIN)"]
    fn nccl_sums_and_broadcasts_on_every_cuda_device() {
        // As pgmld_train::load_cuda: tch sees CUDA only once libtorch_cuda is loaded.
        // SAFETY: dlopen with a NUL-terminated name; the handle stays open.
        let _cuda = unsafe {
            libc::dlopen(c"libtorch_cuda.so".as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL)
        };
        assert!(tch::Cuda::is_available(), "no CUDA device");
        let plugin = std::env::var_os("PGMLD_NCCL_PLUGIN");
        crate::nccl::configure(plugin.as_deref().map(std::path::Path::new));
        println!("NCCL {}", crate::nccl::nccl_version().unwrap());
        let world = (tch::Cuda::device_count() as usize).clamp(1, 4);
        let server = Store::serve("127.0.0.1", 0, world, T, "nccl/").unwrap();
        let port = server.port();
        let rank_main = move |rank: usize, store: &Store| {
            let mut pg = ProcessGroup::nccl(store, rank, world, rank, T).unwrap();
            let dev = Device::Cuda(rank);
            let r = (rank + 1) as f64;
            let a = Tensor::full([2, 3], r, (Kind::Float, dev));
            let b = Tensor::arange(5, (Kind::Float, dev)) * r;
            pg.all_reduce_sum_(&[a.shallow_clone(), b.shallow_clone()]).unwrap();
            let c = Tensor::full([4], r, (Kind::Float, dev));
            pg.broadcast_(&[c.shallow_clone()], world - 1).unwrap();
            pg.barrier().unwrap();
            let cpu = |t: Tensor| Vec::<f32>::try_from(t.to(Device::Cpu).flatten(0, -1)).unwrap();
            (cpu(a), cpu(b), cpu(c))
        };
        let threads: Vec<_> = (1..world)
            .map(|rank| {
                std::thread::spawn(move || {
                    let store = Store::connect("127.0.0.1", port, world, T, "nccl/").unwrap();
                    rank_main(rank, &store)
                })
            })
            .collect();
        let mut out = vec![rank_main(0, &server)];
        out.extend(threads.into_iter().map(|t| t.join().unwrap()));
        let total = (world * (world + 1) / 2) as f32;
        for (a, b, c) in out {
            assert_eq!(a, vec![total; 6]);
            assert_eq!(b, (0..5).map(|i| i as f32 * total).collect::<Vec<_>>());
            assert_eq!(c, vec![world as f32; 4], "the last rank's values");
        }
        println!("NCCL group of {world} on CUDA: all-reduce, broadcast and barrier agree");
    }
}
