//! Turning a site's return addresses into frames people can read, starting at the first
//! frame of user code.

use leakgate_reports::Frame;

/// Frames shown per site at most.
const MAX_FRAMES: usize = 12;

/// Path prefixes of code that is never where a leak should be fixed: the standard
/// library, the allocator, the unwinder and leakgate itself.
const INTERNAL_PREFIXES: &[&str] = &[
    "std::",
    "core::",
    "alloc::",
    "hashbrown::",
    "backtrace::",
    "leakgate::",
    "tikv_jemallocator::",
    "__rustc::",
    "__rust_",
    "__rdl_",
    "__rg_",
    "_rjem_",
];

/// Symbolizes `ips` (return addresses, innermost first), expanding inlined calls, and
/// trims allocator and library frames before the first user frame and the harness frames
/// after the user's code.
pub(crate) fn symbolize(ips: &[usize]) -> Vec<Frame> {
    trim(resolve(ips), is_internal)
}

/// Symbolizes the stack of a thread that faulted. Like [`symbolize`], except that a
/// function without a Rust path at the top is kept: there it is the engine's own C code
/// where the fault happened (`mdb_page_search_root`), not allocator glue.
pub(crate) fn symbolize_fault(ips: &[usize]) -> Vec<Frame> {
    trim(resolve(ips), is_runtime)
}

/// Every frame of `ips`, inlined calls expanded, untrimmed.
fn resolve(ips: &[usize]) -> Vec<Frame> {
    let mut frames = Vec::new();
    for &ip in ips {
        let before = frames.len();
        // A return address points after the call; `ip - 1` lies inside it.
        backtrace::resolve(ip.saturating_sub(1) as *mut std::ffi::c_void, |symbol| {
            let function = symbol
                .name()
                .map_or_else(|| "<unknown>".to_owned(), |name| format!("{name:#}"));
            let file = symbol.filename().map(|f| f.display().to_string());
            frames.push(Frame::new(function, file, symbol.lineno()));
        });
        if frames.len() == before {
            frames.push(Frame::new(format!("{ip:#x}"), None, None));
        }
    }
    frames
}

/// Keeps the frames from the first one `skipped` does not match, up to the harness.
fn trim(frames: Vec<Frame>, skipped: fn(&str) -> bool) -> Vec<Frame> {
    let Some(first_user) = frames.iter().position(|f| !skipped(&f.function)) else {
        // No user code on the stack (a thread's start-up, say): show the library frames
        // from the first one past the allocator.
        return frames
            .into_iter()
            .skip_while(|f| is_allocator(&f.function))
            .take(MAX_FRAMES)
            .collect();
    };
    let mut kept: Vec<Frame> = frames
        .into_iter()
        .skip(first_user)
        .take_while(|f| !is_harness(&f.function))
        .take(MAX_FRAMES)
        .collect();
    // Thread start-up and closure-call glue below the last user frame says nothing.
    while kept.last().is_some_and(|f| is_internal(&f.function)) {
        kept.pop();
    }
    kept
}

/// The path of the type or function a symbol belongs to: `<Vec<T> as Clone>::clone`
/// belongs to `Vec<T>`, `<&T as Debug>::fmt` to `T`.
fn owner(function: &str) -> &str {
    let Some(qualified) = function.strip_prefix('<') else {
        return function;
    };
    let receiver = qualified.split(" as ").next().unwrap_or(qualified);
    receiver
        .trim_start_matches(['&', '*'])
        .trim_start_matches("mut ")
}

fn is_internal(function: &str) -> bool {
    let owner = owner(function);
    // Without a path, the owner is a primitive (`<u8 as SpecFromElem>::from_elem`), a
    // generic parameter (`<T as ToOwned>::to_owned`), a C symbol or an unresolved address:
    // library glue either way.
    !owner.contains("::") || INTERNAL_PREFIXES.iter().any(|p| owner.starts_with(p))
}

/// Frames of the Rust runtime and of leakgate: the standard library, the allocator
/// shims, the unwinder, and unresolved addresses (the signal trampoline).
fn is_runtime(function: &str) -> bool {
    function.starts_with("0x")
        || function == "<unknown>"
        || INTERNAL_PREFIXES
            .iter()
            .any(|p| owner(function).starts_with(p))
}

/// Frames of the allocation path itself: leakgate, the allocator shims, `alloc::alloc`.
fn is_allocator(function: &str) -> bool {
    let owner = owner(function);
    [
        "leakgate::",
        "__rust",
        "__rdl_",
        "__rg_",
        "_rjem_",
        "tikv_jemallocator::",
        "backtrace::",
        "alloc::alloc::",
    ]
    .iter()
    .any(|p| owner.starts_with(p))
}

fn is_harness(function: &str) -> bool {
    owner(function).starts_with("leakgate::")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(names: &[&str]) -> Vec<Frame> {
        names.iter().map(|n| Frame::new(*n, None, None)).collect()
    }

    #[test]
    fn trims_allocator_and_library_frames_down_to_user_code() {
        let trimmed = trim(
            frames(&[
                "leakgate::alloc::sites::on_alloc",
                "<leakgate::alloc::TrackingAlloc<A> as core::alloc::global::GlobalAlloc>::alloc",
                "__rustc::__rust_alloc",
                "alloc::raw_vec::RawVecInner<A>::finish_grow",
                "<T as alloc::borrow::ToOwned>::to_owned",
                "<u8 as alloc::vec::spec_from_elem::SpecFromElem>::from_elem",
                "my_engine::checkpoint::pin_segment",
                "<my_engine::Db as my_engine::Engine>::checkpoint",
                "core::ops::function::FnMut::call_mut",
                "my_engine::run",
                "std::thread::lifecycle::spawn_unchecked::{{closure}}",
                "leakgate::session::run",
                "main",
            ]),
            is_internal,
        );
        let names: Vec<_> = trimmed.iter().map(|f| f.function.as_str()).collect();
        assert_eq!(
            names,
            [
                "my_engine::checkpoint::pin_segment",
                "<my_engine::Db as my_engine::Engine>::checkpoint",
                "core::ops::function::FnMut::call_mut",
                "my_engine::run",
            ]
        );
    }

    #[test]
    fn without_user_frames_shows_the_library_frames_past_the_allocator() {
        let trimmed = trim(
            frames(&[
                "leakgate::alloc::sites::on_alloc",
                "__rustc::__rust_alloc",
                "alloc::alloc::alloc",
                "std::thread::lifecycle::spawn_unchecked",
                "std::sys::thread::unix::Thread::new::thread_start",
            ]),
            is_internal,
        );
        let names: Vec<_> = trimmed.iter().map(|f| f.function.as_str()).collect();
        assert_eq!(
            names,
            [
                "std::thread::lifecycle::spawn_unchecked",
                "std::sys::thread::unix::Thread::new::thread_start"
            ]
        );
    }

    #[test]
    fn a_fault_in_c_code_keeps_the_c_function_on_top() {
        let stack = frames(&[
            "0x7f3a2c0de000",
            "mdb_page_search_root",
            "mdb_get",
            "heed::databases::database::Database<KC,DC,C,CDUP>::get",
            "my_engine::read",
            "leakgate::session::run",
        ]);
        let names = |trimmed: Vec<Frame>| -> Vec<String> {
            trimmed.into_iter().map(|f| f.function).collect()
        };
        assert_eq!(
            names(trim(stack.clone(), is_runtime)),
            [
                "mdb_page_search_root",
                "mdb_get",
                "heed::databases::database::Database<KC,DC,C,CDUP>::get",
                "my_engine::read"
            ]
        );
        // An allocation site's C glue is trimmed instead.
        assert_eq!(
            names(trim(stack, is_internal)),
            [
                "heed::databases::database::Database<KC,DC,C,CDUP>::get",
                "my_engine::read"
            ]
        );
    }

    #[test]
    fn resolves_a_real_address_to_this_function() {
        #[inline(never)]
        fn here() -> Vec<usize> {
            let mut ips = Vec::new();
            backtrace::trace(|frame| {
                ips.push(frame.ip() as usize);
                true
            });
            ips
        }
        let frames = resolve(&here());
        let found = frames.iter().find(|f| f.function.ends_with("::here"));
        assert!(found.is_some_and(|f| f.line.is_some()), "{frames:?}");
    }
}
