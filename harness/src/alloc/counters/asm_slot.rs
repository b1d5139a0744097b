//! This thread's counters on x86-64 Linux: a thread-local defined in assembly and reached
//! through the initial-exec TLS model, so that counting an allocation or a free is six
//! instructions wherever the compiler inlines the allocator.
//!
//! Why not `thread_local!` (`std_slot.rs`, eight instructions): a release build with
//! several codegen units inlines the allocator into its callers, and where a caller's
//! unit does not hold std's getter (a closure shim) it calls the getter out of line, 7
//! instructions more a call; LLVM does not fold an atomic load of a bound into the
//! compare; and the inlined code sets up a frame on the fast path too. Here the counters
//! are reached at fixed offsets from the thread pointer (`fs`), in one cache line, and
//! the fast path branches to the slow one from inside the assembly.
//!
//! Memory model: the assembly's loads and stores are what the portable path's Relaxed,
//! Acquire and Release atomics compile to on x86-64 (a `mov` load is an acquire, a store
//! a release; an `add` to memory without `lock` is a load and a store), and only the
//! owning thread writes the counters it updates. The blocks do not claim `nomem`, so the
//! compiler keeps every other memory access on its side of them.
//!
//! The thread-local is in the static TLS block: an executable, or a shared object loaded
//! at startup, can use it (a `dlopen`ed one only while the static block has room for 64
//! bytes more); in an executable the linker turns the GOT load into an immediate. Its
//! symbol is hidden, and named after the crate's major and minor version so that two
//! semver-incompatible copies keep their own.

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
/// slow path. An allocation or a free is six instructions: the offset from the GOT (an
/// immediate in an executable), one increment, one add to memory, one load, and a
/// compare with the bound in memory that branches to the slow path.
#[inline(always)]
pub(super) fn count(change: Change) -> bool {
    // The registers are scratch (`out(reg) _`): the blocks have no outputs, so they may
    // branch.
    match change {
        // SAFETY: updates this thread's counters (see the module docs), which only this
        // thread writes but for the bounds, which it only reads.
        Change::Alloc(size) => unsafe {
            asm!(
                concat!("mov {this}, qword ptr [rip + ", symbol!(), "@GOTTPOFF]"),
                "inc qword ptr fs:[{this} + {allocations}]",
                "add qword ptr fs:[{this} + {net_bytes}], {size}",
                "mov {net}, qword ptr fs:[{this} + {net_bytes}]",
                "cmp {net}, qword ptr fs:[{this} + {slow_at_or_above}]",
                "jge {slow}",
                size = in(reg) size,
                this = out(reg) _,
                net = out(reg) _,
                allocations = const offset_of!(ThreadCounters, allocations),
                net_bytes = const offset_of!(ThreadCounters, net_bytes),
                slow_at_or_above = const offset_of!(ThreadCounters, slow_at_or_above),
                slow = label { return true },
                options(nostack),
            );
        },
        // SAFETY: as for an allocation.
        Change::Free(size) => unsafe {
            asm!(
                concat!("mov {this}, qword ptr [rip + ", symbol!(), "@GOTTPOFF]"),
                "inc qword ptr fs:[{this} + {frees}]",
                "sub qword ptr fs:[{this} + {net_bytes}], {size}",
                "mov {net}, qword ptr fs:[{this} + {net_bytes}]",
                "cmp {net}, qword ptr fs:[{this} + {slow_below}]",
                "jl {slow}",
                size = in(reg) size,
                this = out(reg) _,
                net = out(reg) _,
                frees = const offset_of!(ThreadCounters, frees),
                net_bytes = const offset_of!(ThreadCounters, net_bytes),
                slow_below = const offset_of!(ThreadCounters, slow_below),
                slow = label { return true },
                options(nostack),
            );
        },
        // One allocation and one free: live blocks unchanged.
        // SAFETY: as for an allocation.
        Change::Realloc { old, new } => unsafe {
            asm!(
                concat!("mov {this}, qword ptr [rip + ", symbol!(), "@GOTTPOFF]"),
                "inc qword ptr fs:[{this} + {allocations}]",
                "inc qword ptr fs:[{this} + {frees}]",
                "add qword ptr fs:[{this} + {net_bytes}], {delta}",
                "mov {net}, qword ptr fs:[{this} + {net_bytes}]",
                "cmp {net}, qword ptr fs:[{this} + {slow_at_or_above}]",
                "jge {slow}",
                "cmp {net}, qword ptr fs:[{this} + {slow_below}]",
                "jl {slow}",
                delta = in(reg) new.wrapping_sub(old),
                this = out(reg) _,
                net = out(reg) _,
                allocations = const offset_of!(ThreadCounters, allocations),
                frees = const offset_of!(ThreadCounters, frees),
                net_bytes = const offset_of!(ThreadCounters, net_bytes),
                slow_at_or_above = const offset_of!(ThreadCounters, slow_at_or_above),
                slow_below = const offset_of!(ThreadCounters, slow_below),
                slow = label { return true },
                options(nostack),
            );
        },
    }
    false
}
