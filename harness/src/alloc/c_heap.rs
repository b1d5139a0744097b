//! C heap allocation sites, through jemalloc's allocation hooks.
//!
//! With the `jemalloc` feature, jemalloc also serves C's `malloc` family (it is built
//! unprefixed), so SQLite, LMDB and C++ engines allocate from it. While a scenario's
//! sites are recorded, [`install`] registers hooks (`experimental.hooks.install`) that
//! jemalloc calls after every allocation and before every free; the hooks enter C blocks
//! in the same live-block table as Rust blocks, tagged with a site whose stack is unwound
//! by DWARF (C code is seldom built with frame pointers).
//!
//! Rust's allocations reach jemalloc through [`super::TrackingAlloc`], which records them
//! itself: while the hooks are installed it marks the thread ([`rust_call`]) so the hooks
//! skip its calls. Without the hooks nothing here runs: jemalloc takes its fast path, and
//! so do the Rust allocator's counted calls.

use std::cell::Cell;
use std::ffi::{CStr, c_int, c_void};
use std::sync::atomic::{AtomicPtr, Ordering::Relaxed};

use super::raw::SpinLock;
use super::{C_HOOKS, set_mode, sites};

/// jemalloc's `hooks_t` (`include/jemalloc/internal/hook.h`).
#[repr(C)]
struct Hooks {
    alloc: unsafe extern "C" fn(*mut c_void, c_int, *mut c_void, usize, *const usize),
    dalloc: unsafe extern "C" fn(*mut c_void, c_int, *mut c_void, *const usize),
    expand:
        unsafe extern "C" fn(*mut c_void, c_int, *mut c_void, usize, usize, usize, *const usize),
    extra: *mut c_void,
}

// SAFETY: function pointers and a null pointer that jemalloc only passes back to them.
unsafe impl Sync for Hooks {}

static HOOKS: Hooks = Hooks {
    alloc: on_alloc,
    dalloc: on_dalloc,
    expand: on_expand,
    extra: std::ptr::null_mut(),
};

/// jemalloc's handle for the installed hooks, to remove them.
static HANDLE: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());
/// Serialises [`install`] and [`remove`].
static INSTALLING: SpinLock<()> = SpinLock::new(());

thread_local! {
    /// Set while this thread is inside a Rust allocator call into jemalloc.
    static IN_RUST_CALL: Cell<bool> = const { Cell::new(false) };
}

/// Whether the hooks are installed, so Rust allocator calls must be marked.
#[inline(always)]
pub(crate) fn installed() -> bool {
    super::mode() & C_HOOKS != 0
}

/// Runs `call` (the Rust allocator's call into jemalloc) with this thread marked, so
/// the hooks leave the block to the Rust allocator's own bookkeeping.
#[inline(always)]
pub(crate) fn rust_call<T>(call: impl FnOnce() -> T) -> T {
    let outer = IN_RUST_CALL.with(|marked| marked.replace(true));
    let result = call();
    IN_RUST_CALL.with(|marked| marked.set(outer));
    result
}

/// Why C heap sites cannot be recorded, if they cannot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("jemalloc refused its allocation hooks (mallctl {name}: error {code})")]
pub(crate) struct HookError {
    name: &'static str,
    code: c_int,
}

/// Installs the hooks; C blocks allocated from now on are recorded while
/// [`sites::recording`]. Idempotent.
pub(crate) fn install() -> Result<(), HookError> {
    let _serial = INSTALLING.lock();
    if installed() {
        return Ok(());
    }
    // Rust's calls are marked from before the hooks go live (partway through the mallctl),
    // so none is ever taken for a C block.
    set_mode(C_HOOKS, true);
    let name = c"experimental.hooks.install";
    let mut handle: *mut c_void = std::ptr::null_mut();
    let mut handle_len = size_of::<*mut c_void>();
    // SAFETY: the mallctl reads a `hooks_t` from `newp` (ours is `'static`, since
    // jemalloc keeps the pointer) and writes one pointer, the handle, to `oldp`.
    let code = unsafe {
        mallctl(
            name,
            (&raw mut handle).cast(),
            &mut handle_len,
            (&raw const HOOKS).cast_mut().cast(),
            size_of::<Hooks>(),
        )
    };
    if code != 0 || handle.is_null() {
        set_mode(C_HOOKS, false);
        return Err(HookError {
            name: "experimental.hooks.install",
            code,
        });
    }
    HANDLE.store(handle, Relaxed);
    Ok(())
}

/// Removes the hooks. A hook already running on another thread finishes; the hooks'
/// code is never unloaded, so that is harmless.
pub(crate) fn remove() {
    let _serial = INSTALLING.lock();
    let mut handle = HANDLE.load(Relaxed);
    if handle.is_null() {
        return;
    }
    // SAFETY: `newp` is the handle `install` got, passed by pointer as jemalloc expects.
    let code = unsafe {
        mallctl(
            c"experimental.hooks.remove",
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            (&raw mut handle).cast(),
            size_of::<*mut c_void>(),
        )
    };
    // Rust's calls stay marked while the hooks may still run: a failed removal leaves
    // them in place, where they check `sites::table_in_use`.
    if code == 0 {
        HANDLE.store(std::ptr::null_mut(), Relaxed);
        set_mode(C_HOOKS, false);
    }
}

/// # Safety
/// As jemalloc's `mallctl`.
unsafe fn mallctl(
    name: &CStr,
    old: *mut c_void,
    old_len: *mut usize,
    new: *mut c_void,
    new_len: usize,
) -> c_int {
    // SAFETY: forwarded with the caller's guarantees; `name` is NUL-terminated.
    unsafe { tikv_jemalloc_sys::mallctl(name.as_ptr(), old, old_len, new, new_len) }
}

/// Whether a hook call is about a C block: the Rust allocator's calls, leakgate's own
/// allocations and calls made while no table is kept are not.
#[inline(always)]
fn is_c_call() -> bool {
    sites::table_in_use() && !IN_RUST_CALL.with(Cell::get) && !super::inside_tracker()
}

/// jemalloc's `hook_alloc_realloc` and `hook_alloc_rallocx` (`hook_alloc_t`): the block
/// came from moving `args[0]`, whose free hook runs next.
const MOVED_KINDS: [c_int; 2] = [8, 9];

/// After every allocation (`malloc`, `calloc`, `realloc`, `posix_memalign`, …).
unsafe extern "C" fn on_alloc(
    _extra: *mut c_void,
    kind: c_int,
    result: *mut c_void,
    _result_raw: usize,
    args: *const usize,
) {
    if result.is_null() || !is_c_call() {
        return;
    }
    // Usable size, as jemalloc's statistics (the C heap series) count it.
    // SAFETY: `result` is a live jemalloc block, just allocated.
    let size = unsafe { tikv_jemalloc_sys::malloc_usable_size(result) };
    if sites::recording() {
        sites::on_c_alloc(result as usize, size);
    } else if MOVED_KINDS.contains(&kind) && !args.is_null() {
        // After the measured iterations, a moved block keeps its tag, as a Rust one does.
        // SAFETY: jemalloc passes the call's arguments, at least three; the first of a
        // reallocation is the old block.
        let old = unsafe { *args };
        if old != 0 {
            sites::on_c_move(old, result as usize, size);
        }
    }
}

/// Before every free (`free`, `realloc` moving or freeing a block).
unsafe extern "C" fn on_dalloc(
    _extra: *mut c_void,
    _kind: c_int,
    address: *mut c_void,
    _args: *const usize,
) {
    if !address.is_null() && is_c_call() {
        sites::on_c_free(address as usize);
    }
}

/// After `realloc` grew or shrank a block in place.
unsafe extern "C" fn on_expand(
    _extra: *mut c_void,
    _kind: c_int,
    address: *mut c_void,
    _old_usable: usize,
    new_usable: usize,
    _result_raw: usize,
    _args: *const usize,
) {
    if !address.is_null() && is_c_call() {
        sites::on_c_resize(address as usize, new_usable);
    }
}
