//! Turning a site's return addresses into frames people can read, starting at the first
//! frame of user code.

use leakgate_reports::{Frame, Site};

use crate::alloc::sites::Heap;
use crate::maps::Mapping;

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

/// Symbolizes the sites' stacks, recorded as return addresses by a child whose code was
/// mapped as `child`, into frames; keeps the addresses, for offline symbolization.
///
/// A Rust heap site starts at the first user frame: allocator and library frames before
/// it go, as do the harness frames after the user's code. A C heap site starts at the
/// first frame past the allocation path: jemalloc and its hook, the `malloc` family and
/// an engine's wrappers of it (`sqlite3MemMalloc`), C++'s `operator new` and standard
/// library, and anything in a system library (libc, libstdc++).
pub(crate) fn resolve_sites<'a>(
    sites: impl IntoIterator<Item = &'a mut Site>,
    child: &[Mapping],
    heap: Heap,
) {
    let here = crate::maps::current();
    for site in sites {
        let ips: Vec<usize> = site
            .addresses
            .iter()
            .map(|&ip| {
                let ip = ip as usize;
                crate::maps::translate(ip, child, &here).unwrap_or(ip)
            })
            .collect();
        if !ips.is_empty() {
            let frames = resolve(&ips, &here);
            site.frames = match heap {
                Heap::Rust => site_frames(frames),
                Heap::C => c_site_frames(frames),
            };
        }
    }
}

/// Symbolizes the stack of a thread that faulted. Like a Rust heap site in
/// [`resolve_sites`], except that C functions right above the first user frame are kept:
/// there they are the engine's own code where the fault happened (`mdb_page_search_root`
/// … `mdb_get` under heed).
pub(crate) fn symbolize_fault(ips: &[usize]) -> Vec<Frame> {
    fault_frames(resolve(ips, &crate::maps::current()))
}

fn site_frames(frames: Vec<Frame>) -> Vec<Frame> {
    let first_user = first_user_frame(&frames);
    trim(frames, first_user, is_rust_glue)
}

fn fault_frames(frames: Vec<Frame>) -> Vec<Frame> {
    let first_kept = first_user_frame(&frames).map(|user| {
        frames[..user]
            .iter()
            .rposition(|f| !is_c_function(&f.function))
            .map_or(0, |runtime| runtime + 1)
    });
    trim(frames, first_kept, is_rust_glue)
}

fn c_site_frames(frames: Vec<Frame>) -> Vec<Frame> {
    let first = frames.iter().position(|f| !is_c_allocation_path(f));
    trim(frames, first, is_c_glue)
}

fn first_user_frame(frames: &[Frame]) -> Option<usize> {
    frames.iter().position(|f| !is_internal(&f.function))
}

/// Every frame of `ips` (addresses in this process, mapped as `here`), inlined calls
/// expanded, untrimmed. A frame in a shared library with no source file names the
/// library instead.
fn resolve(ips: &[usize], here: &[Mapping]) -> Vec<Frame> {
    let executable = std::env::current_exe().ok();
    let mut frames = Vec::new();
    for &ip in ips {
        let library = here
            .iter()
            .find(|m| (m.start..m.end).contains(&ip))
            .filter(|m| executable.as_ref() != Some(&m.path))
            .map(|m| m.path.display().to_string());
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
        for frame in &mut frames[before..] {
            if frame.file.is_none() {
                frame.file.clone_from(&library);
            }
        }
    }
    frames
}

/// Keeps the frames from `first_user` up to the harness's, less the `glue` at the end.
fn trim(frames: Vec<Frame>, first_user: Option<usize>, glue: fn(&Frame) -> bool) -> Vec<Frame> {
    let Some(first_user) = first_user else {
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
    while kept.last().is_some_and(glue) {
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

/// A C function: no Rust path, and neither runtime glue nor an unresolved address.
fn is_c_function(function: &str) -> bool {
    !function.contains("::")
        && !function.starts_with("0x")
        && function != "<unknown>"
        && !INTERNAL_PREFIXES.iter().any(|p| function.starts_with(p))
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

/// A frame of a C block's allocation path, where no leak is fixed (see [`resolve_sites`]).
fn is_c_allocation_path(frame: &Frame) -> bool {
    let function = frame.function.as_str();
    let lower = function.to_ascii_lowercase();
    // `ralloc` covers jemalloc's reallocation path (`do_rallocx`, `iralloct`, …).
    let names_allocation = [
        "malloc",
        "calloc",
        "realloc",
        "ralloc",
        "memalign",
        "valloc",
        "aligned_alloc",
    ]
    .iter()
    .any(|word| lower.contains(word));
    is_allocator(function)
        || in_system_library(frame)
        || in_system_header(frame)
        || in_jemalloc(frame)
        || (is_c_function(function) && names_allocation)
        || function.starts_with("operator new")
        || cxx_path(function).starts_with("std::")
        || cxx_path(function).starts_with("__gnu_cxx::")
}

/// Glue below a Rust site's user code: the runtime's, and C's thread start-up.
fn is_rust_glue(frame: &Frame) -> bool {
    is_internal(&frame.function)
}

/// Glue below a C site's code: the Rust runtime's and the system libraries', not C
/// functions, which are the engine's own.
fn is_c_glue(frame: &Frame) -> bool {
    (is_internal(&frame.function) && !is_c_function(&frame.function)) || in_system_library(frame)
}

/// In the C runtime: libc, the loader, libstdc++, libgcc. Not any shared library: an
/// engine from a distribution's `.so` without debug info is the engine's code.
fn in_system_library(frame: &Frame) -> bool {
    const RUNTIME: [&str; 6] = [
        "libc.so",
        "ld-linux",
        "libstdc++.so",
        "libgcc_s.so",
        "libm.so",
        "libpthread.so",
    ];
    frame.file.as_deref().is_some_and(|file| {
        let name = file.rsplit('/').next().unwrap_or(file);
        RUNTIME.iter().any(|runtime| name.starts_with(runtime))
    })
}

/// jemalloc's own code, by its sources' path (built from `tikv-jemalloc-sys`).
fn in_jemalloc(frame: &Frame) -> bool {
    frame
        .file
        .as_deref()
        .is_some_and(|file| file.contains("/jemalloc/src/") || file.contains("/jemalloc/include/"))
}

/// Inlined from the system's headers: C++'s standard library (`std::vector`'s growth,
/// `std::function`'s storage), whatever the demangled name looks like.
fn in_system_header(frame: &Frame) -> bool {
    frame
        .file
        .as_deref()
        .is_some_and(|file| file.starts_with("/usr/include/"))
}

/// A demangled C++ name without the return type that templates carry
/// (`void std::vector<int>::push_back(int const&)`).
fn cxx_path(function: &str) -> &str {
    match function.split_once(' ') {
        Some((first, rest)) if !first.contains(['<', '(', ':']) => rest,
        _ => function,
    }
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
        let trimmed = site_frames(frames(&[
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
        ]));
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

    /// A frame without source, named by the shared object it lies in.
    fn in_object(name: &str, object: &str) -> Frame {
        Frame::new(name, Some(object.into()), None)
    }

    #[test]
    fn a_c_site_starts_past_malloc_its_wrappers_and_the_cxx_library() {
        let in_libc = |name: &str| in_object(name, "/usr/lib/x86_64-linux-gnu/libc.so.6");
        let mut stack = frames(&[
            "leakgate::alloc::c_heap::on_alloc",
            "_rjem_je_hook_invoke_alloc",
            "iralloct",
            "do_rallocx",
            "realloc",
            "malloc",
            "sqlite3MemMalloc",
            "mallocWithAlarm",
            "sqlite3Malloc",
            "pcache1Alloc",
            "sqlite3PcacheFetch",
            "sqlite3_step",
            "rusqlite::Statement::step",
            "my_engine::checkpoint",
            "leakgate::session::run",
        ]);
        stack[2].file = Some("/root/.cargo/registry/src/tikv-jemalloc-sys/jemalloc/include/jemalloc/internal/jemalloc_internal_inlines_c.h".into());
        stack.insert(4, in_libc("__libc_malloc"));
        let names: Vec<_> = c_site_frames(stack)
            .into_iter()
            .map(|f| f.function)
            .collect();
        assert_eq!(
            names,
            [
                "pcache1Alloc",
                "sqlite3PcacheFetch",
                "sqlite3_step",
                "rusqlite::Statement::step",
                "my_engine::checkpoint"
            ]
        );

        let mut on_a_cxx_thread = frames(&[
            "_rjem_je_hook_invoke_alloc",
            "malloc",
            "operator new(unsigned long)",
            "void std::vector<rocksdb::FileMetaData*>::_M_realloc_insert(rocksdb::FileMetaData* const&)",
            "_M_create<rocksdb::FileMetaData*>",
            "rocksdb::VersionBuilder::Rep::SaveTo(rocksdb::VersionStorageInfo*) const",
            "rocksdb::FlushJob::Run()",
            "rocksdb::ThreadPoolImpl::Impl::BGThread(unsigned long)",
        ]);
        on_a_cxx_thread[4].file = Some("/usr/include/c++/12/bits/std_function.h".into());
        on_a_cxx_thread.push(in_libc("start_thread"));
        on_a_cxx_thread.push(in_libc("clone3"));
        let names: Vec<_> = c_site_frames(on_a_cxx_thread)
            .into_iter()
            .map(|f| f.function)
            .collect();
        assert_eq!(
            names,
            [
                "rocksdb::VersionBuilder::Rep::SaveTo(rocksdb::VersionStorageInfo*) const",
                "rocksdb::FlushJob::Run()",
                "rocksdb::ThreadPoolImpl::Impl::BGThread(unsigned long)",
            ]
        );
    }

    #[test]
    fn a_c_site_in_a_shared_library_without_debug_info_starts_in_it() {
        let library = |name: &str| in_object(name, "/usr/lib/x86_64-linux-gnu/liblmdb.so.0.0.0");
        let mut stack = frames(&["malloc", "heed::Env::open", "my_engine::open"]);
        stack.insert(1, library("mdb_env_open"));
        stack.insert(1, library("mdb_env_setup_locks"));
        let names: Vec<_> = c_site_frames(stack)
            .into_iter()
            .map(|f| f.function)
            .collect();
        assert_eq!(
            names,
            [
                "mdb_env_setup_locks",
                "mdb_env_open",
                "heed::Env::open",
                "my_engine::open"
            ]
        );
    }

    #[test]
    fn without_user_frames_shows_the_library_frames_past_the_allocator() {
        let trimmed = site_frames(frames(&[
            "leakgate::alloc::sites::on_alloc",
            "__rustc::__rust_alloc",
            "alloc::alloc::alloc",
            "std::thread::lifecycle::spawn_unchecked",
            "std::sys::thread::unix::Thread::new::thread_start",
        ]));
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
    fn a_fault_keeps_the_c_frames_right_above_user_code_but_not_the_allocators() {
        let names = |stack: Vec<Frame>| -> Vec<String> {
            fault_frames(stack)
                .into_iter()
                .map(|f| f.function)
                .collect()
        };
        let in_lmdb = frames(&[
            "0x7f3a2c0de000",
            "mdb_page_search_root",
            "mdb_get",
            "heed::Database::get",
            "my_engine::read",
            "leakgate::session::run",
        ]);
        assert_eq!(
            names(in_lmdb),
            [
                "mdb_page_search_root",
                "mdb_get",
                "heed::Database::get",
                "my_engine::read"
            ]
        );
        let in_malloc = frames(&[
            "je_tcache_alloc_small_hard",
            "malloc",
            "leakgate::alloc::sites::on_alloc",
            "__rustc::__rust_alloc",
            "my_engine::walk",
            "my_engine::walk",
            "leakgate::session::run",
        ]);
        assert_eq!(names(in_malloc), ["my_engine::walk", "my_engine::walk"]);
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
        let frames = resolve(&here(), &crate::maps::current());
        let found = frames.iter().find(|f| f.function.ends_with("::here"));
        assert!(found.is_some_and(|f| f.line.is_some()), "{frames:?}");
    }
}
