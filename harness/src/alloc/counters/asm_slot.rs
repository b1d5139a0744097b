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
//! bytes more, else it fails to load: build with `--cfg leakgate_portable_tls` then); in
//! an executable the linker turns the GOT load into an immediate. Its symbol is hidden,
//! and `build.rs` names it after this build of the crate, so that two copies of leakgate
//! in one link keep their own.

use std::arch::{asm, global_asm};
use std::mem::{offset_of, size_of};

use super::{Change, ThreadCounters};

/// The thread-local's symbol.
macro_rules! tls_symbol {
    () => {
        env!("LEAKGATE_TLS_SYMBOL")
    };
}

/// The memory operand that holds the thread-local's offset from the thread pointer.
macro_rules! tls_offset {
    () => {
        concat!("qword ptr [rip + ", tls_symbol!(), "@GOTTPOFF]")
    };
}

// The fields' offsets, which the image below and the fast path use.
const NET_BYTES: usize = offset_of!(ThreadCounters, net_bytes);
const ALLOCATIONS: usize = offset_of!(ThreadCounters, allocations);
const FREES: usize = offset_of!(ThreadCounters, frees);
const SLOW_AT_OR_ABOVE: usize = offset_of!(ThreadCounters, slow_at_or_above);
const SLOW_BELOW: usize = offset_of!(ThreadCounters, slow_below);
const SIZE: usize = size_of::<ThreadCounters>();

// The image writes the fields in this order, 8 bytes each, `mode` last.
const _: () = {
    assert!(NET_BYTES == 0);
    assert!(ALLOCATIONS == 8);
    assert!(FREES == 16);
    assert!(SLOW_AT_OR_ABOVE == 24);
    assert!(SLOW_BELOW == 32);
    assert!(offset_of!(ThreadCounters, flushed) == 40);
    assert!(offset_of!(ThreadCounters, next) == 48);
    assert!(offset_of!(ThreadCounters, mode) == 56);
};

/// `ThreadCounters::new()`'s words up to `next` (null), and its mode byte: a new field
/// fails to compile here until the image has it.
const INITIAL_IMAGE: ([i64; 6], u8) = {
    let ThreadCounters {
        net_bytes,
        allocations,
        frees,
        slow_at_or_above,
        slow_below,
        flushed,
        next,
        mode,
    } = ThreadCounters::new();
    assert!(next.into_inner().is_null());
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
    concat!(".globl ", tls_symbol!()),
    concat!(".hidden ", tls_symbol!()),
    concat!(".type ", tls_symbol!(), ",@object"),
    concat!(".size ", tls_symbol!(), ", {size}"),
    concat!(tls_symbol!(), ":"),
    ".quad {0}, {1}, {2}, {3}, {4}, {5}",
    // next
    ".quad 0",
    ".byte {mode}",
    ".zero {padding}",
    ".popsection",
    const INITIAL_IMAGE.0[0],
    const INITIAL_IMAGE.0[1],
    const INITIAL_IMAGE.0[2],
    const INITIAL_IMAGE.0[3],
    const INITIAL_IMAGE.0[4],
    const INITIAL_IMAGE.0[5],
    mode = const INITIAL_IMAGE.1,
    size = const SIZE,
    padding = const SIZE - offset_of!(ThreadCounters, mode) - 1,
);

/// The address of this thread's counters.
#[inline(always)]
fn address() -> *const ThreadCounters {
    let address: *const ThreadCounters;
    // SAFETY: reads the thread pointer (at `fs:0`, by the x86-64 TLS ABI) and the
    // symbol's offset from it, both constant for the thread's life: `pure, readonly` lets
    // the compiler reuse the result until the next store.
    unsafe {
        asm!(
            "mov {address}, qword ptr fs:[0]",
            concat!("add {address}, ", tls_offset!()),
            address = out(reg) address,
            options(pure, readonly, nostack),
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
    // while this thread's assembly and other threads read or write them.
    f(unsafe { &*address() })
}

/// One allocation (`inc` of `ALLOCATIONS`, `add`, `jge` past `SLOW_AT_OR_ABOVE`) or one
/// free (`inc` of `FREES`, `sub`, `jl` below `SLOW_BELOW`): returns `true` from the
/// calling function when the call must take the slow path. Six instructions: the offset
/// from the GOT (an immediate in an executable), one increment, one add to memory, one
/// load, and a compare with the bound in memory that branches to the slow path.
///
/// `this` holds the offset from the first instruction, so it is early-clobbered (`out`)
/// and never shares the input's register; `net` is written after the input's last read
/// (`lateout`). Discarded outputs are clobbers, so the block may branch to a `label`.
macro_rules! count_one_call {
    ($size:expr, $count:expr, $add_or_sub:literal, $bound:expr, $jump_if_crossed:literal) => {
        // SAFETY: updates this thread's counters (see the module docs), which only this
        // thread writes but for the bounds, which it only reads.
        unsafe {
            asm!(
                concat!("mov {this}, ", tls_offset!()),
                "inc qword ptr fs:[{this} + {count}]",
                concat!($add_or_sub, " qword ptr fs:[{this} + {net_bytes}], {size}"),
                "mov {net}, qword ptr fs:[{this} + {net_bytes}]",
                "cmp {net}, qword ptr fs:[{this} + {bound}]",
                concat!($jump_if_crossed, " {slow}"),
                size = in(reg) $size,
                this = out(reg) _,
                net = lateout(reg) _,
                count = const $count,
                net_bytes = const NET_BYTES,
                bound = const $bound,
                slow = label { return true },
                options(nostack),
            )
        }
    };
}

/// Applies `change` to this thread's counters; returns whether the call must take the
/// slow path.
#[inline(always)]
pub(super) fn count(change: Change) -> bool {
    match change {
        Change::Alloc(size) => count_one_call!(size, ALLOCATIONS, "add", SLOW_AT_OR_ABOVE, "jge"),
        Change::Free(size) => count_one_call!(size, FREES, "sub", SLOW_BELOW, "jl"),
        // One allocation and one free: live blocks unchanged; registers as in
        // `count_one_call!`, with two compares.
        // SAFETY: as in `count_one_call!`.
        Change::Realloc { old, new } => unsafe {
            asm!(
                concat!("mov {this}, ", tls_offset!()),
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
                net = lateout(reg) _,
                allocations = const ALLOCATIONS,
                frees = const FREES,
                net_bytes = const NET_BYTES,
                slow_at_or_above = const SLOW_AT_OR_ABOVE,
                slow_below = const SLOW_BELOW,
                slow = label { return true },
                options(nostack),
            );
        },
    }
    false
}
