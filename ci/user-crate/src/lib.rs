//! A stand-in for a user's storage engine: a request log with a leak, a bounded cache,
//! and two crashes on damaged pages that the example pins.

use std::collections::VecDeque;
use std::sync::LazyLock;

/// Remembers every request forever: the leak the example must catch.
#[inline(never)]
pub fn remember_request(id: usize) -> &'static [u8; 64] {
    Box::leak(Box::new([id as u8; 64]))
}

/// Keeps the last `capacity` entries.
pub struct RecentEntries {
    entries: VecDeque<String>,
    capacity: usize,
}

impl RecentEntries {
    /// An empty cache of `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        Self { entries: VecDeque::new(), capacity }
    }

    /// Adds an entry, evicting the oldest beyond capacity.
    pub fn insert(&mut self, entry: String) {
        self.entries.push_back(entry);
        if self.entries.len() > self.capacity {
            self.entries.pop_front();
        }
    }
}

/// A table built once, on first use.
pub static CRC_TABLE: LazyLock<Vec<u32>> = LazyLock::new(|| (0..256u32).map(|i| i.wrapping_mul(0x04c1_1db7)).collect());

/// Follows a page pointer without checking it: on a damaged page number the read
/// faults (SIGSEGV), the crash the example pins.
#[inline(never)]
pub fn read_page(page: usize) -> u64 {
    // SAFETY: none: a damaged page number makes this read fault, on purpose.
    unsafe { std::ptr::read_volatile(page as *const u64) }
}

/// Counts the pages under `page`, trusting that the tree has no cycle: on a page that
/// points to itself it recurses until the stack overflows, the other crash pinned.
#[inline(never)]
pub fn count_pages(page: u64, depth: u64) -> u64 {
    let children = std::hint::black_box([page; 32]);
    if depth == u64::MAX {
        return 0;
    }
    1 + count_pages(children[(depth % 32) as usize], depth + 1) + std::hint::black_box(0)
}
