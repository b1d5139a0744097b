//! Where a scenario's process faulted: the stack of the thread that got SIGSEGV or SIGBUS
//! (a stack overflow, a wild pointer, a read past the end of a mapped file), so the
//! report names a function and not only a signal.
//!
//! In the child, [`install`] puts a handler in front of the runtime's. The handler runs
//! on the alternate signal stack Rust gives its threads; it walks the faulting thread's
//! frame pointers from the signal context, bounded by that thread's stack, writes the
//! return addresses to stderr as one line, puts the previous handler back and returns,
//! so the fault happens again and ends the process as it would have (for a stack
//! overflow, with Rust's "has overflowed its stack"). The parent reads the line with
//! [`from_stderr`] and moves each address into its own address space through the
//! child's mappings (executable and shared libraries alike) before symbolizing.

use leakgate_reports::Frame;

use crate::maps::{self, Mapping};

/// Starts the line the handler writes.
const MARKER: &str = "leakgate-fault-stack";
/// The word after [`MARKER`] when the fault was the stack running out.
const OVERFLOW: &str = "overflow";
/// Return addresses written at most: enough to see a recursion repeat.
const MAX_FRAMES: usize = 48;

/// Installs the handler for SIGSEGV and SIGBUS in this (child) process. Best effort:
/// without it a fault is still classified, just not located.
pub(crate) fn install() {
    platform::install();
}

/// The stack the child's handler wrote to `stderr`, innermost first: symbolized and
/// trimmed to user code, and raw as the child saw it. Empty if there is none. `child`
/// is where the child mapped its code.
pub(crate) fn from_stderr(stderr: &str, child: &[Mapping]) -> (Vec<Frame>, Vec<u64>) {
    let raw = addresses(stderr.lines().rev().find(|l| l.starts_with(MARKER)));
    let here = maps::current();
    let ips: Vec<usize> = raw
        .iter()
        .copied()
        // An address neither process maps as code (a jump through a wild pointer) is
        // kept as it is: it is printed, not resolved.
        .map(|ip| maps::translate(ip, child, &here).unwrap_or(ip))
        .collect();
    let raw = raw.into_iter().map(|ip| ip as u64).collect();
    (crate::symbolize::symbolize_fault(&ips), raw)
}

/// Whether the handler saw the fault as the stack running out (see
/// `is_stack_overflow`), even where the runtime did not say so.
pub(crate) fn overflowed(stderr: &str) -> bool {
    stderr
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(MARKER))
        .is_some_and(|rest| rest.split_whitespace().next() == Some(OVERFLOW))
}

/// `stderr` without the handler's line, which means nothing to people.
pub(crate) fn without_marker(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| !l.starts_with(MARKER))
        .flat_map(|l| [l, "\n"])
        .collect()
}

/// The return addresses on the handler's line, innermost first.
fn addresses(line: Option<&str>) -> Vec<usize> {
    line.and_then(|l| l.strip_prefix(MARKER))
        .map(|l| l.split_whitespace().filter_map(parse_hex).collect())
        .unwrap_or_default()
}

fn parse_hex(word: &str) -> Option<usize> {
    usize::from_str_radix(word.trim_start_matches("0x"), 16).ok()
}

/// The function that fills most of the top of `stack`, when it fills at least half of it
/// and recurs: the recursion a stack overflow ran through.
pub(crate) fn recursion(stack: &[Frame]) -> Option<&str> {
    let top = &stack[..stack.len().min(MAX_FRAMES)];
    let most = top
        .iter()
        .map(|f| f.function.as_str())
        .max_by_key(|name| top.iter().filter(|f| f.function == *name).count())?;
    let count = top.iter().filter(|f| f.function == most).count();
    (count >= 4 && count * 2 >= top.len()).then_some(most)
}

#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
))]
mod platform {
    use std::sync::OnceLock;

    use super::{MARKER, MAX_FRAMES, OVERFLOW};

    /// The handlers this one replaced, put back before the fault repeats.
    static PREVIOUS: OnceLock<[(libc::c_int, Action); 2]> = OnceLock::new();

    /// `libc::sigaction`, which holds no references, made shareable with the handler.
    #[derive(Clone, Copy)]
    struct Action(libc::sigaction);
    // SAFETY: a plain C struct of integers and a handler address, never mutated once
    // stored.
    unsafe impl Sync for Action {}
    // SAFETY: as above.
    unsafe impl Send for Action {}

    pub(super) fn install() {
        // The main thread's stack bounds, cached now: the handler cannot ask for them.
        crate::alloc::stack::cache_stack_bounds();
        // Decided now, so the handler knows whether frame pointers can be trusted; the
        // DWARF walk this makes also warms the unwinder's caches for the handler.
        crate::alloc::stack::detect();
        let mut previous = [(libc::SIGSEGV, None), (libc::SIGBUS, None)];
        for (signal, slot) in &mut previous {
            // SAFETY: an all-zero sigaction is valid (empty mask, no flags); we fill in
            // the handler, and the kernel writes the old action into `old`.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_fault as *const () as usize;
                action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                libc::sigemptyset(&mut action.sa_mask);
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(*signal, &action, &mut old) == 0 {
                    *slot = Some(Action(old));
                }
            }
        }
        let stored = previous.map(|(signal, old)| {
            // A signal whose handler could not be replaced keeps its own: restoring the
            // default there is what the runtime's handler would do on a stray fault.
            // SAFETY: as above, a zeroed sigaction is SIG_DFL with no flags.
            (signal, old.unwrap_or(Action(unsafe { std::mem::zeroed() })))
        });
        let _ = PREVIOUS.set(stored);
    }

    /// The handler: no allocation, no locks of ours, one `write`.
    extern "C" fn on_fault(
        signal: libc::c_int,
        info: *mut libc::siginfo_t,
        context: *mut libc::c_void,
    ) {
        let mut line = Line::new();
        line.push_str(MARKER);
        if !context.is_null() {
            // SAFETY: with SA_SIGINFO the kernel passes a valid ucontext_t.
            let (ip, fp, sp) = unsafe { registers(&*(context as *const libc::ucontext_t)) };
            // SAFETY: `info` is the kernel's siginfo_t for a fault, which carries an address.
            let address = (!info.is_null()).then(|| unsafe { (*info).si_addr() } as usize);
            if address.is_some_and(|address| is_stack_overflow(address, sp)) {
                line.push_str(" ");
                line.push_str(OVERFLOW);
            }
            let mut unwound = [0usize; MAX_FRAMES];
            let len = unwind_from(ip, &mut unwound);
            if len > 0 {
                for &ip in &unwound[..len] {
                    line.push_str(" ");
                    line.push_hex(ip);
                }
            } else {
                line.push_str(" ");
                line.push_hex(ip);
                for ip in frame_walk(fp, sp).take(MAX_FRAMES - 1) {
                    line.push_str(" ");
                    line.push_hex(ip);
                }
            }
        }
        line.push_str("\n");
        // SAFETY: write(2) is async-signal-safe; the buffer is ours.
        unsafe { libc::write(libc::STDERR_FILENO, line.bytes.as_ptr().cast(), line.len) };
        if let Some(previous) = PREVIOUS.get() {
            for (signal, action) in previous {
                // SAFETY: puts back an action the kernel gave us.
                unsafe { libc::sigaction(*signal, &action.0, std::ptr::null_mut()) };
            }
        }
        // A fault repeats when the handler returns; a signal someone sent does not, so
        // send it again (blocked until we return) for the previous handler to take.
        // SAFETY: `info` is null or the kernel's siginfo_t.
        let sent = info.is_null() || unsafe { (*info).si_code } <= 0;
        if sent {
            // SAFETY: raise is async-signal-safe.
            unsafe { libc::raise(signal) };
        }
    }

    /// Instruction, frame and stack pointers at the fault.
    ///
    /// # Safety
    /// `context` must be the context the kernel passed to a signal handler.
    #[cfg(target_arch = "x86_64")]
    unsafe fn registers(context: &libc::ucontext_t) -> (usize, usize, usize) {
        let registers = &context.uc_mcontext.gregs;
        (
            registers[libc::REG_RIP as usize] as usize,
            registers[libc::REG_RBP as usize] as usize,
            registers[libc::REG_RSP as usize] as usize,
        )
    }

    /// Instruction, frame and stack pointers at the fault.
    ///
    /// # Safety
    /// `context` must be the context the kernel passed to a signal handler.
    #[cfg(target_arch = "aarch64")]
    unsafe fn registers(context: &libc::ucontext_t) -> (usize, usize, usize) {
        let registers = &context.uc_mcontext;
        (
            registers.pc as usize,
            registers.regs[29] as usize,
            registers.sp as usize,
        )
    }

    /// Whether a fault at `address`, with the stack pointer at `sp`, is the stack running
    /// out: the address lies just below (or at) the stack pointer, and the stack pointer
    /// near the end of the thread's stack where its bounds are known. Rust's own handler
    /// says so only for faults in the guard page; code without stack probes (C, jemalloc
    /// inside the allocator) can fault further down.
    fn is_stack_overflow(address: usize, sp: usize) -> bool {
        const REACH: usize = 1 << 20;
        let (low, _) = crate::alloc::stack::cached_stack_bounds();
        let below_sp = address <= sp.saturating_add(4096) && sp.saturating_sub(address) < REACH;
        let at_the_end = low == 0 || sp.saturating_sub(low) < REACH;
        below_sp && at_the_end
    }

    /// When this process has no usable frame pointers (a crate built without them), the
    /// faulting thread's stack by DWARF unwinding, through the signal frame: `frames`
    /// gets the fault address `ip` then the return addresses above it. Returns 0 when
    /// frame pointers are usable or the unwinder does not reach `ip`. libgcc's unwinder
    /// takes no lock of ours and does not allocate once warmed up (by `detect`).
    fn unwind_from(ip: usize, frames: &mut [usize; MAX_FRAMES]) -> usize {
        // Not from inside the tracker: the fault may have hit the unwinder itself, which
        // the allocator runs to capture sites, and unwinding again there could hang.
        if crate::alloc::stack::detect() == crate::alloc::stack::Method::FramePointers
            || crate::alloc::inside_tracker()
        {
            return 0;
        }
        let mut len = 0;
        let mut reached = false;
        // SAFETY: only this thread unwinds here, and the closure writes into our own
        // buffer; the unwinder reads the faulting thread's stack through the signal frame.
        unsafe {
            backtrace::trace_unsynchronized(|frame| {
                let at = frame.ip() as usize;
                // The handler's own frames and the signal trampoline come first.
                reached |= at == ip;
                if reached {
                    frames[len] = at;
                    len += 1;
                }
                len < frames.len()
            });
        }
        len
    }

    /// Return addresses along the frame-pointer chain from `fp`, staying between the
    /// stack pointer and the top of this thread's stack (nothing is read outside them).
    fn frame_walk(mut fp: usize, sp: usize) -> impl Iterator<Item = usize> {
        let (_, high) = crate::alloc::stack::cached_stack_bounds();
        std::iter::from_fn(move || {
            let inside = fp >= sp
                && fp.is_multiple_of(8)
                && fp.checked_add(16).is_some_and(|end| end <= high);
            if !inside {
                return None;
            }
            // SAFETY: `fp` lies within this thread's mapped stack, above the stack pointer.
            let (next, ip) = unsafe { (*(fp as *const usize), *((fp + 8) as *const usize)) };
            // Frames only go up the stack; anything else ends the walk.
            fp = if next > fp { next } else { usize::MAX };
            (ip != 0).then_some(ip)
        })
    }

    /// A fixed buffer for the line, filled without allocating.
    struct Line {
        bytes: [u8; 1024],
        len: usize,
    }

    impl Line {
        fn new() -> Self {
            Self {
                bytes: [0; 1024],
                len: 0,
            }
        }

        fn push_str(&mut self, text: &str) {
            for &byte in text.as_bytes() {
                if self.len < self.bytes.len() - 1 {
                    self.bytes[self.len] = byte;
                    self.len += 1;
                }
            }
        }

        fn push_hex(&mut self, value: usize) {
            let mut digits = [0u8; 16];
            let mut n = value;
            let mut count = 0;
            loop {
                digits[count] = b"0123456789abcdef"[n & 0xf];
                count += 1;
                n >>= 4;
                if n == 0 {
                    break;
                }
            }
            // Leave room for the newline; a cut-off address would mislead.
            if self.len + count + 1 < self.bytes.len() {
                for &digit in digits[..count].iter().rev() {
                    self.bytes[self.len] = digit;
                    self.len += 1;
                }
            }
        }
    }
}

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64")
)))]
mod platform {
    pub(super) fn install() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(names: &[&str]) -> Vec<Frame> {
        names.iter().map(|n| Frame::new(*n, None, None)).collect()
    }

    #[test]
    fn a_function_filling_the_stack_is_the_recursion() {
        let mut stack = frames(&["engine::check::visit_page"; 30]);
        stack.extend(frames(&["engine::check::run", "engine::main"]));
        assert_eq!(recursion(&stack), Some("engine::check::visit_page"));
    }

    #[test]
    fn an_ordinary_stack_has_no_recursion() {
        let stack = frames(&["engine::read", "engine::lookup", "engine::main"]);
        assert_eq!(recursion(&stack), None);
    }

    #[test]
    fn a_line_without_the_marker_gives_no_stack() {
        assert!(
            from_stderr("thread 'main' has overflowed its stack\n", &[])
                .0
                .is_empty()
        );
        assert_eq!(
            addresses(Some("leakgate-fault-stack 1f zz 0x20")),
            [0x1f, 0x20]
        );
        assert_eq!(
            addresses(Some("leakgate-fault-stack overflow 1f 20")),
            [0x1f, 0x20]
        );
        assert!(overflowed("x\nleakgate-fault-stack overflow 1f 20\n"));
        assert!(!overflowed("leakgate-fault-stack 1f 20\n"));
    }
}
