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
//! A panic inside a loop (a bug: inputs are checked before any loop starts) poisons the
//! pool's lock, and every later CPU op in the process fails.

use std::cell::Cell;
use std::ops::Range;
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
    candle_core::utils::barrier_pool().execute_chunked(n, f);
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
        done.lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .extend(results);
    });
    let mut done = done
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    done.sort_unstable_by_key(|(i, _)| *i);
    assert_eq!(done.len(), n, "parallel::map_init: every index runs once");
    done.into_iter().map(|(_, r)| r).collect()
}

/// Calls `f(i, chunk)` for the `i`-th `chunk_len`-long chunk of `data` (the last one may be
/// shorter), as `data.chunks_mut(chunk_len).enumerate()` would hand them out.
pub(crate) fn for_each_chunk_mut<T: Send>(
    data: &mut [T],
    chunk_len: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    for_each_chunk_mut_init(data, chunk_len, || (), |_, i, chunk| f(i, chunk));
}

/// [`for_each_chunk_mut`] with a scratch `state` per range of chunks, as in
/// [`for_each_init`].
pub(crate) fn for_each_chunk_mut_init<T: Send, S>(
    data: &mut [T],
    chunk_len: usize,
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, usize, &mut [T]) + Sync,
) {
    assert!(
        chunk_len > 0,
        "parallel::for_each_chunk_mut: chunk length 0"
    );
    let len = data.len();
    let base = SharedMut(data.as_mut_ptr());
    let base = &base;
    for_each_init(len.div_ceil(chunk_len), init, move |state, i| {
        let start = i * chunk_len;
        let end = len.min(start + chunk_len);
        // SAFETY: each index `i` is handed out exactly once, so the chunks
        // `start..end` are disjoint and inside `data`, which stays mutably borrowed (and
        // alive) until every worker is done.
        let chunk = unsafe { std::slice::from_raw_parts_mut(base.0.add(start), end - start) };
        f(state, i, chunk)
    });
}

/// A pointer to the start of a slice whose disjoint chunks go to different threads.
struct SharedMut<T>(*mut T);
// SAFETY: only used by `for_each_chunk_mut_init`, which gives every thread its own chunks.
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
    fn chunks_cover_the_slice_once_with_a_short_last_chunk() {
        let mut data = vec![0usize; 1003];
        for_each_chunk_mut(&mut data, 10, |i, chunk| {
            assert_eq!(chunk.len(), if i == 100 { 3 } else { 10 });
            for (j, x) in chunk.iter_mut().enumerate() {
                *x += i * 10 + j + 1;
            }
        });
        assert_eq!(data, (1..=1003).collect::<Vec<_>>());
    }

    #[test]
    fn nested_loops_run_inline() {
        let sums = map(8, |i| map(4, |j| i * j).iter().sum::<usize>());
        assert_eq!(sums, (0..8).map(|i| 6 * i).collect::<Vec<_>>());
    }
}
