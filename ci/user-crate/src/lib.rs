//! A stand-in for a user's storage engine: a request log with a leak and a bounded cache.

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
