//! Data-parallel loops for our CPU kernels, run on Candle's own worker pool.
//!
//! Candle's CPU backend splits its elementwise ops over a pool of spinning workers
//! (`candle_core::utils::barrier_pool`). Our kernels used to run on rayon's pool instead:
//! two pools of busy-waiting threads on the same cores, each spinning while the other
//! worked, and every hand-over woke a sleeping thread. Now the convolutions, BatchNorm,
//! pooling and Candle's elementwise ops all run on one worker per core. (Candle's own
//! matmul, used by the small linear heads, still runs on rayon's pool.) The pool's size is
//! fixed at its first use from `CANDLE_NUM_THREADS`, else `RAYON_NUM_THREADS`, else
//! Candle's default: the physical cores of the CPU mask it is allowed (it does not read
//! cgroup CPU quotas; set one of the variables, or `--threads`, in a limited container).
//!
//! Work is handed out in ranges of consecutive indices from a shared cursor, so a fast
//! thread takes over a slow one's share. Results never depend on which thread ran what.
//! A loop started from inside another runs inline on the thread that started it.
//! A panic inside a loop (a bug: inputs are checked before any loop starts) is caught on
//! the thread where it happened and raised again on the calling thread once every thread
//! is done: left to unwind through Candle's pool, it would poison the pool's lock and fail
//! every later CPU op in the process.

use std::any::Any;
use std::cell::Cell;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// The number of threads the loops here run on, the calling thread included.
pub fn threads() -> usize {
    candle_core::utils::barrier_pool().n_workers() + 1
}

thread_local! {
    /// Set while this thread runs a loop's share. Candle's pool runs a nested loop inline
    /// on its workers but not on the calling thread, which would wait on itself.
    static IN_LOOP: Cell<bool> = const { Cell::new(false) };
}

fn for_each_range(n: usize, f: impl Fn(Range<usize>) + Sync) {
    if n == 0 {
        return;
    }
    if IN_LOOP.get() {
        return f(0..n);
    }
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            IN_LOOP.set(false);
        }
    }
    IN_LOOP.set(true);
    let _leave = Leave;
    let panicked: Mutex<Option<Box<dyn Any + Send>>> = Mutex::new(None);
    let failed = AtomicBool::new(false);
    candle_core::utils::barrier_pool().execute_chunked(n, |range| {
        // Once a range has panicked the loop's result is lost: skip the rest.
        if failed.load(Ordering::Relaxed) {
            return;
        }
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| f(range))) {
            failed.store(true, Ordering::Relaxed);
            lock(&panicked).get_or_insert(payload);
        }
    });
    let payload = lock(&panicked).take();
    if let Some(payload) = payload {
        panic::resume_unwind(payload);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Calls `f(state, i)` for every `i` in `0..n`; `init` makes a `state` (a scratch buffer)
/// once per range of indices a thread takes, not once per index.
pub(crate) fn for_each_init<S>(
    n: usize,
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, usize) + Sync,
) {
    for_each_range(n, |range| {
        let mut state = init();
        for i in range {
            f(&mut state, i);
        }
    });
}

/// `(0..n).map(f)` in order.
pub(crate) fn map<R: Send>(n: usize, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
    map_init(n, || (), |_, i| f(i))
}

/// [`map`] with a scratch `state` per range of indices, as in [`for_each_init`].
pub(crate) fn map_init<S, R: Send>(
    n: usize,
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, usize) -> R + Sync,
) -> Vec<R> {
    let done: Mutex<Vec<(usize, R)>> = Mutex::new(Vec::with_capacity(n));
    for_each_range(n, |range| {
        let mut state = init();
        let results: Vec<(usize, R)> = range.map(|i| (i, f(&mut state, i))).collect();
        lock(&done).extend(results);
    });
    let mut done = done
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    done.sort_unstable_by_key(|(i, _)| *i);
    assert_eq!(done.len(), n, "parallel::map_init: every index runs once");
    done.into_iter().map(|(_, r)| r).collect()
}

/// A vector of `len` floats, built by `f(i, chunk)` from the `i`-th `chunk_len`-long chunk
/// (the last one may be shorter), each chunk handed over zeroed, as
/// `vec![0.0; len].chunks_mut(chunk_len).enumerate()` would hand them out.
///
/// Each chunk is zeroed by the thread that fills it, just before `f` runs: `vec![0.0; len]`
/// on the calling thread is one serial memset (glibc's calloc zeroes reused heap memory)
/// while every other thread waits.
pub(crate) fn zeroed_chunks(
    len: usize,
    chunk_len: usize,
    f: impl Fn(usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    zeroed_chunks_init(len, chunk_len, || (), |_, i, chunk| f(i, chunk))
}

/// [`zeroed_chunks`] with a scratch `state` per range of chunks, as in [`for_each_init`].
pub(crate) fn zeroed_chunks_init<S>(
    len: usize,
    chunk_len: usize,
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    let zero_then_fill = move |state: &mut S, i: usize, chunk: &mut [MaybeUninit<f32>]| {
        chunk.fill(MaybeUninit::new(0.0));
        // SAFETY: every element was just written.
        let chunk = unsafe { &mut *(chunk as *mut [MaybeUninit<f32>] as *mut [f32]) };
        f(state, i, chunk)
    };
    // SAFETY: `zero_then_fill` writes every element of its chunk before `f` sees it.
    unsafe { written_chunks_init(len, chunk_len, init, zero_then_fill) }
}

/// [`zeroed_chunks_init`] for kernels that write every float of their chunk themselves:
/// the chunks are handed over uninitialised, which saves a pass over memory (zeroing an
/// op's output was ~5% of a ResNet-32 step).
///
/// # Safety
/// `f` writes every element of the chunk it is handed (it may not read any before writing
/// it); otherwise the returned vector holds uninitialised floats.
pub(crate) unsafe fn written_chunks_init<S>(
    len: usize,
    chunk_len: usize,
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, usize, &mut [MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    assert!(chunk_len > 0, "parallel: chunks of length 0");
    let mut out: Vec<f32> = Vec::with_capacity(len);
    let base = SharedMut(out.as_mut_ptr());
    let base = &base;
    for_each_init(len.div_ceil(chunk_len), init, move |state, i| {
        let start = i * chunk_len;
        let end = len.min(start + chunk_len);
        // SAFETY: each index `i` is handed out exactly once, so the chunks `start..end` are
        // disjoint and inside the allocation's capacity, which lives until every worker is
        // done; a slice of `MaybeUninit` may cover memory not written yet.
        let chunk = unsafe {
            std::slice::from_raw_parts_mut(
                base.0.add(start).cast::<MaybeUninit<f32>>(),
                end - start,
            )
        };
        f(state, i, chunk)
    });
    // SAFETY: the caller's `f` wrote every chunk of 0..len (had any range panicked, the
    // panic would have been raised again before this line).
    unsafe { out.set_len(len) };
    out
}

/// A pointer to the start of a slice whose disjoint chunks go to different threads.
struct SharedMut<T>(*mut T);
// SAFETY: only used by `written_chunks_init`, which gives every thread its own chunks.
unsafe impl<T: Send> Sync for SharedMut<T> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_keeps_the_order() {
        assert_eq!(
            map(1000, |i| i * 3),
            (0..1000).map(|i| i * 3).collect::<Vec<_>>()
        );
        assert!(map(0, |i| i).is_empty());
    }

    #[test]
    fn chunks_come_zeroed_and_cover_the_vector_once_with_a_short_last_chunk() {
        let data = zeroed_chunks(1003, 10, |i, chunk| {
            assert_eq!(chunk.len(), if i == 100 { 3 } else { 10 });
            for (j, x) in chunk.iter_mut().enumerate() {
                assert_eq!(*x, 0.0);
                *x += (i * 10 + j + 1) as f32;
            }
        });
        assert_eq!(data, (1..=1003).map(|v| v as f32).collect::<Vec<_>>());
        assert!(zeroed_chunks(0, 4, |_, _| unreachable!()).is_empty());
    }

    #[test]
    fn written_chunks_cover_the_vector_once_with_a_short_last_chunk() {
        // SAFETY: the closure writes every element of its chunk.
        let data = unsafe {
            written_chunks_init(
                1003,
                10,
                || (),
                |_, i, chunk| {
                    assert_eq!(chunk.len(), if i == 100 { 3 } else { 10 });
                    for (j, x) in chunk.iter_mut().enumerate() {
                        x.write((i * 10 + j + 1) as f32);
                    }
                },
            )
        };
        assert_eq!(data, (1..=1003).map(|v| v as f32).collect::<Vec<_>>());
    }

    #[test]
    fn a_panic_reaches_the_caller_and_leaves_the_pool_working() {
        let caught = std::panic::catch_unwind(|| {
            map(64, |i| {
                assert!(i != 37, "index 37 is bad");
                i
            })
        });
        let payload = caught.expect_err("the panic must reach the caller");
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied());
        assert_eq!(message, Some("index 37 is bad"));
        // The pool and Candle's own ops on it still run.
        assert_eq!(map(100, |i| i + 1).iter().sum::<usize>(), 5050);
        let big =
            candle_core::Tensor::ones(1 << 17, candle_core::DType::F32, &candle_core::Device::Cpu)
                .unwrap();
        let sum: f32 = (&big + &big)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert_eq!(sum, (2 << 17) as f32);
    }

    #[test]
    fn nested_loops_run_inline() {
        let sums = map(8, |i| map(4, |j| i * j).iter().sum::<usize>());
        assert_eq!(sums, (0..8).map(|i| 6 * i).collect::<Vec<_>>());
    }
}
