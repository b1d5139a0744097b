//! Building blocks for the allocator's bookkeeping that must not allocate through the
//! global allocator: a spin lock and a growable buffer backed directly by `mmap`.
//!
//! Bookkeeping lives in anonymous mappings so it is invisible to both heaps leakgate
//! measures (the Rust heap and jemalloc's process-wide statistics).

use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};

/// A test-and-test-and-set lock that yields the CPU after a short spin, so a preempted
/// holder on a 2-core machine does not make its waiters burn whole time slices.
pub(crate) struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the lock hands out `&mut T` to one thread at a time, so sharing the lock is
// as safe as sending the value.
unsafe impl<T: Send> Sync for SpinLock<T> {}

impl<T> SpinLock<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// The lock if it is free now, without waiting.
    pub(crate) fn try_lock(&self) -> Option<SpinGuard<'_, T>> {
        self.locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
            // `then`, not `then_some`: a guard built for a failed attempt would unlock
            // the holder's lock as it is dropped.
            .then(|| SpinGuard { lock: self })
    }

    pub(crate) fn lock(&self) -> SpinGuard<'_, T> {
        let mut spins = 0u32;
        while self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            while self.locked.load(Ordering::Relaxed) {
                spins = spins.saturating_add(1);
                if spins < 64 {
                    std::hint::spin_loop();
                } else {
                    // sched_yield: a system call that does not allocate.
                    std::thread::yield_now();
                }
            }
        }
        SpinGuard { lock: self }
    }
}

impl<T> SpinLock<T> {
    /// Releases the lock, whoever holds it: for the child of a `fork`, where the holder
    /// may have been a thread that the fork did not copy, which will never release it.
    ///
    /// # Safety
    /// No running thread may hold the lock (in a child just forked, only its one thread
    /// runs).
    pub(crate) unsafe fn unlock_after_fork(&self) {
        self.locked.store(false, Ordering::Release);
    }
}

pub(crate) struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
}

impl<T> Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: holding the guard means holding the lock.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: holding the guard means holding the lock, so this is the only reference.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}

/// Types for which the all-zero bit pattern is a valid value (fresh mappings are zeroed).
///
/// # Safety
/// Implement only for plain-old-data types whose all-zero bytes are a valid value.
pub(crate) unsafe trait Zeroable: Copy {}

// SAFETY: an integer; zero is a value like any other.
unsafe impl Zeroable for u64 {}

// SAFETY: as for `u64`.
unsafe impl Zeroable for u32 {}

/// Maps `bytes` of zeroed memory that is never unmapped, without reserving swap for it:
/// pages cost memory only once written. For sparse, address-indexed tables, so no huge
/// pages (one written entry would make a whole 2 MiB resident). `None` when the kernel
/// refuses.
pub(crate) fn map_sparse(bytes: usize) -> Option<std::ptr::NonNull<u8>> {
    // SAFETY: an anonymous private mapping touches no existing memory; the result is
    // checked against MAP_FAILED before use.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return None;
    }
    std::ptr::NonNull::new(ptr.cast())
}

/// Gives the pages of `bytes` bytes at `ptr` (page-aligned, inside a [`map_sparse`]
/// mapping) back to the kernel: they read as zero again and cost no memory until written.
pub(crate) fn release_pages(ptr: *mut u8, bytes: usize) {
    // SAFETY: MADV_DONTNEED on private anonymous memory only zeroes the range; callers
    // pass a range inside a mapping of their own that is never unmapped.
    unsafe { libc::madvise(ptr.cast(), bytes, libc::MADV_DONTNEED) };
}

/// A fixed-capacity array of `T` in its own anonymous mapping, zero-initialised.
pub(crate) struct MmapBuf<T: Zeroable> {
    ptr: *mut T,
    capacity: usize,
    _owns: PhantomData<T>,
}

// SAFETY: `MmapBuf` owns its mapping exclusively, like a `Box<[T]>`.
unsafe impl<T: Zeroable + Send> Send for MmapBuf<T> {}

impl<T: Zeroable> MmapBuf<T> {
    /// A buffer with no capacity and no mapping.
    pub(crate) const fn empty() -> Self {
        Self {
            ptr: std::ptr::null_mut(),
            capacity: 0,
            _owns: PhantomData,
        }
    }

    /// A zeroed buffer of `capacity` elements, or `None` when the kernel refuses the mapping.
    pub(crate) fn zeroed(capacity: usize) -> Option<Self> {
        let bytes = capacity.checked_mul(size_of::<T>())?;
        if bytes == 0 {
            return Some(Self::empty());
        }
        // SAFETY: an anonymous private mapping touches no existing memory; the result is
        // checked against MAP_FAILED before use. Page alignment satisfies any `T`.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        // Tables are probed at random: huge pages spare a TLB miss on most probes. Only
        // advice; the kernel may decline.
        // SAFETY: advises on the mapping just created, of exactly `bytes` bytes.
        unsafe { libc::madvise(ptr, bytes, libc::MADV_HUGEPAGE) };
        Some(Self {
            ptr: ptr.cast(),
            capacity,
            _owns: PhantomData,
        })
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn as_slice(&self) -> &[T] {
        if self.capacity == 0 {
            return &[];
        }
        // SAFETY: the mapping holds `capacity` zero-initialised (hence valid, `T: Zeroable`)
        // elements and lives as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr, self.capacity) }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [T] {
        if self.capacity == 0 {
            return &mut [];
        }
        // SAFETY: as in `as_slice`, and `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.capacity) }
    }
}

impl<T: Zeroable> Drop for MmapBuf<T> {
    fn drop(&mut self) {
        if self.capacity != 0 {
            // SAFETY: `ptr` and the byte length are exactly those returned by `mmap`.
            unsafe { libc::munmap(self.ptr.cast(), self.capacity * size_of::<T>()) };
        }
    }
}
