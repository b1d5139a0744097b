//! [`Mapping`]: where a process's executable code is mapped, from `/proc/self/maps`, so
//! an address recorded in one process (a child's fault stack) can be moved into another
//! (the parent, which symbolizes it). Both run the same executable but, with ASLR, the
//! executable and every shared library sit at different addresses in each.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One executable mapping of a file: addresses `start..end` hold the file's bytes from
/// `offset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Mapping {
    pub start: usize,
    pub end: usize,
    pub offset: usize,
    pub path: PathBuf,
}

/// This process's executable, file-backed mappings; empty where `/proc` is unreadable.
pub(crate) fn current() -> Vec<Mapping> {
    std::fs::read_to_string("/proc/self/maps")
        .map(|text| parse(&text))
        .unwrap_or_default()
}

/// The executable, file-backed mappings of a `/proc/<pid>/maps` text.
fn parse(text: &str) -> Vec<Mapping> {
    text.lines()
        .filter_map(|line| {
            // address perms offset dev inode path
            let mut fields = line.split_whitespace();
            let (range, perms, offset) = (fields.next()?, fields.next()?, fields.next()?);
            let path = fields.nth(2)?;
            if !perms.contains('x') || !path.starts_with('/') {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            Some(Mapping {
                start: usize::from_str_radix(start, 16).ok()?,
                end: usize::from_str_radix(end, 16).ok()?,
                offset: usize::from_str_radix(offset, 16).ok()?,
                path: PathBuf::from(path),
            })
        })
        .collect()
}

/// Moves `address` from the process mapped as `from` into the one mapped as `to`: the
/// same byte of the same file. `None` when either process does not map it.
pub(crate) fn translate(address: usize, from: &[Mapping], to: &[Mapping]) -> Option<usize> {
    let source = from.iter().find(|m| (m.start..m.end).contains(&address))?;
    let file_offset = address - source.start + source.offset;
    to.iter()
        .find(|m| {
            m.path == source.path && (m.offset..m.offset + (m.end - m.start)).contains(&file_offset)
        })
        .map(|m| m.start + (file_offset - m.offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHILD: &str = "\
55d0c0000000-55d0c0100000 r--p 00000000 fe:01 42 /work/target/debug/deps/engines
55d0c0100000-55d0c0500000 r-xp 00100000 fe:01 42 /work/target/debug/deps/engines
7f1000000000-7f1000020000 r-xp 00028000 fe:01 77 /usr/lib/x86_64-linux-gnu/libc.so.6
7f2000000000-7f2000001000 rw-p 00000000 00:00 0
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
";
    const PARENT: &str = "\
5600a0100000-5600a0500000 r-xp 00100000 fe:01 42 /work/target/debug/deps/engines
7f5500000000-7f5500020000 r-xp 00028000 fe:01 77 /usr/lib/x86_64-linux-gnu/libc.so.6
";

    #[test]
    fn keeps_only_executable_file_mappings() {
        let maps = parse(CHILD);
        assert_eq!(maps.len(), 2);
        assert_eq!(
            maps[1].path,
            PathBuf::from("/usr/lib/x86_64-linux-gnu/libc.so.6")
        );
        assert_eq!(maps[1].offset, 0x28000);
    }

    #[test]
    fn an_address_moves_to_the_same_byte_of_the_same_file() {
        let (child, parent) = (parse(CHILD), parse(PARENT));
        assert_eq!(
            translate(0x55d0c0123456, &child, &parent),
            Some(0x5600a0123456)
        );
        assert_eq!(
            translate(0x7f1000000abc, &child, &parent),
            Some(0x7f5500000abc)
        );
        // Not code, or code the other process does not map.
        assert_eq!(translate(0x7f2000000010, &child, &parent), None);
        assert_eq!(translate(0x5600a0123456, &parent, &child[1..]), None);
    }

    #[test]
    fn this_process_maps_its_own_code() {
        let anchor = current as fn() -> Vec<Mapping> as usize;
        let maps = current();
        assert_eq!(translate(anchor, &maps, &maps), Some(anchor));
    }
}
