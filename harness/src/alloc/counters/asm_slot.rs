//! This thread's counters on x86-64 Linux: a thread-local defined in assembly and reached
//! through the initial-exec model, so that the fast path is seven instructions wherever
//! the compiler inlines the allocator.
//!
//! Why not `thread_local!`: a release build with several codegen units inlines the
//! allocator into its callers, and where a caller's unit does not hold std's getter (a
//! closure shim) it calls the getter out of line, 7 instructions more a call; and
//! atomic loads of the bounds are not folded into the compare. Here the counters are
//! reached at fixed offsets from the thread pointer (`fs`), in one cache line.
//!
//! Memory model: the assembly's `mov`s are what the portable path's Relaxed, Acquire and
//! Release atomics compile to on x86-64 (a load is an acquire, a store a release), and
//! only the owning thread writes the counters it updates. The blocks do not claim
//! `nomem`, so the compiler keeps every other memory access on its side of them.
//!
//! The thread-local is in the static TLS block (initial-exec): an executable, or a
//! shared object loaded at startup, can use it; in an executable the linker turns the
//! GOT load into an immediate. Its symbol is hidden, and named after the crate's major
//! and minor version so that two semver-incompatible copies keep their own.

use std::arch::{asm, global_asm};
use std::mem::{offset_of, size_of};

use super::{Change, ThreadCounters};

/// The thread-local's symbol.
macro_rules! symbol {
    () => {
        concat!(
            "leakgate_",
            env!("CARGO_PKG_VERSION_MAJOR"),
            "_",
            env!("CARGO_PKG_VERSION_MINOR"),
            "_thread_counters"
        )
    };
}

// The image below writes the fields at these offsets.
const _: () = {
    assert!(offset_of!(ThreadCounters, net_bytes) == 0);
    assert!(offset_of!(ThreadCounters, allocations) == 8);
    assert!(offset_of!(ThreadCounters, frees) == 16);
    assert!(offset_of!(ThreadCounters, slow_at_or_above) == 24);
    assert!(offset_of!(ThreadCounters, slow_below) == 32);
    assert!(offset_of!(ThreadCounters, flushed) == 40);
    assert!(offset_of!(ThreadCounters, next) == 48);
    assert!(offset_of!(ThreadCounters, mode) == 56);
    assert!(size_of::<ThreadCounters>() == 64);
};

/// The words of `ThreadCounters::new()` before `next` (which it sets to null), and its
/// mode byte: a new field fails to compile here until the image has it.
const NEW: ([i64; 6], u8) = {
    let ThreadCounters {
        net_bytes,
        allocations,
        frees,
        slow_at_or_above,
        slow_below,
        flushed,
        next: _,
        mode,
    } = ThreadCounters::new();
    (
        [
            net_bytes.into_inner(),
            allocations.into_inner() as i64,
            frees.into_inner() as i64,
            slow_at_or_above.into_inner(),
            slow_below.into_inner(),
            flushed.into_inner(),
        ],
        mode.into_inner(),
    )
};

global_asm!(
    ".pushsection .tdata,\"awT\",@progbits",
    ".p2align 6",
    concat!(".globl ", symbol!()),
    concat!(".hidden ", symbol!()),
    concat!(".type ", symbol!(), ",@object"),
    concat!(".size ", symbol!(), ", 64"),
    concat!(symbol!(), ":"),
    ".quad {0}, {1}, {2}, {3}, {4}, {5}",
    // next
    ".quad 0",
    ".byte {mode}",
    // up to 64 bytes
    ".zero 7",
    ".popsection",
    const NEW.0[0],
    const NEW.0[1],
    const NEW.0[2],
    const NEW.0[3],
    const NEW.0[4],
    const NEW.0[5],
    mode = const NEW.1,
);

/// The address of this thread's counters.
#[inline(always)]
fn address() -> *const ThreadCounters {
    let address: *const ThreadCounters;
    // SAFETY: reads the thread pointer (at `fs:0`, by the x86-64 TLS ABI) and the
    // symbol's offset from it. Both are constant for the thread's life, which is why the
    // block may claim `pure, nomem`: the compiler may reuse its result within a function,
    // which runs on one thread.
    unsafe {
        asm!(
            "mov {address}, qword ptr fs:[0]",
            concat!("add {address}, qword ptr [rip + ", symbol!(), "@GOTTPOFF]"),
            address = out(reg) address,
            options(pure, nomem, nostack),
        );
    }
    address
}

/// Runs `f` on this thread's counters.
#[inline(always)]
pub(super) fn this_thread<R>(f: impl FnOnce(&ThreadCounters) -> R) -> R {
    // SAFETY: the static TLS block lives as long as the thread, past its thread-local
    // destructors, and holds the symbol aligned to 64 bytes with `ThreadCounters`'
    // layout (checked above); every field is an atomic, so a shared reference is sound
    // while other threads read them.
    f(unsafe { &*address() })
}

/// Applies `change` to this thread's counters; returns whether the call must take the
/// slow path. An allocation or a free: the offset from the GOT (an immediate in an
/// executable), one increment, one add to memory, two loads, then the compare and
/// branch.
#[inline(always)]
pub(super) fn count(change: Change) -> bool {
    match change {
        Change::Alloc(size) => {
            let (net_bytes, bound): (i64, i64);
            // SAFETY: updates this thread's counters (see the module docs), which only
            // this thread writes but for the bounds, which it only reads.
            unsafe {
                asm!(
                    concat!("mov {bound}, qword ptr [rip + ", symbol!(), "@GOTTPOFF]"),
                    "inc qword ptr fs:[{bound} + {allocations}]",
                    "add qword ptr fs:[{bound} + {net}], {size}",
                    "mov {net_bytes}, qword ptr fs:[{bound} + {net}]",
                    "mov {bound}, qword ptr fs:[{bound} + {at_or_above}]",
                    size = in(reg) size,
                    net_bytes = out(reg) net_bytes,
                    bound = out(reg) bound,
                    allocations = const offset_of!(ThreadCounters, allocations),
                    net = const offset_of!(ThreadCounters, net_bytes),
                    at_or_above = const offset_of!(ThreadCounters, slow_at_or_above),
                    options(nostack),
                );
            }
            net_bytes >= bound
        }
        Change::Free(size) => {
            let (net_bytes, bound): (i64, i64);
            // SAFETY: as for an allocation.
            unsafe {
                asm!(
                    concat!("mov {bound}, qword ptr [rip + ", symbol!(), "@GOTTPOFF]"),
                    "inc qword ptr fs:[{bound} + {frees}]",
                    "sub qword ptr fs:[{bound} + {net}], {size}",
                    "mov {net_bytes}, qword ptr fs:[{bound} + {net}]",
                    "mov {bound}, qword ptr fs:[{bound} + {below}]",
                    size = in(reg) size,
                    net_bytes = out(reg) net_bytes,
                    bound = out(reg) bound,
                    frees = const offset_of!(ThreadCounters, frees),
                    net = const offset_of!(ThreadCounters, net_bytes),
                    below = const offset_of!(ThreadCounters, slow_below),
                    options(nostack),
                );
            }
            net_bytes < bound
        }
        Change::Realloc { old, new } => {
            let (net_bytes, at_or_above, below): (i64, i64, i64);
            // SAFETY: as for an allocation. One allocation and one free: live blocks
            // unchanged.
            unsafe {
                asm!(
                    concat!("mov {at_or_above}, qword ptr [rip + ", symbol!(), "@GOTTPOFF]"),
                    "inc qword ptr fs:[{at_or_above} + {allocations}]",
                    "inc qword ptr fs:[{at_or_above} + {frees}]",
                    "add qword ptr fs:[{at_or_above} + {net}], {delta}",
                    "mov {net_bytes}, qword ptr fs:[{at_or_above} + {net}]",
                    "mov {below}, qword ptr fs:[{at_or_above} + {below_offset}]",
                    "mov {at_or_above}, qword ptr fs:[{at_or_above} + {at_or_above_offset}]",
                    delta = in(reg) new.wrapping_sub(old),
                    net_bytes = out(reg) net_bytes,
                    at_or_above = out(reg) at_or_above,
                    below = out(reg) below,
                    allocations = const offset_of!(ThreadCounters, allocations),
                    frees = const offset_of!(ThreadCounters, frees),
                    net = const offset_of!(ThreadCounters, net_bytes),
                    below_offset = const offset_of!(ThreadCounters, slow_below),
                    at_or_above_offset = const offset_of!(ThreadCounters, slow_at_or_above),
                    options(nostack),
                );
            }
            net_bytes >= at_or_above || net_bytes < below
        }
    }
}
