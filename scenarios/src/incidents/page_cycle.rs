//! bbolt/etcd after power loss: a misdirected write left a copy of a branch page over one
//! of its own children, so the B+tree has a cycle, and a consistency check that walks the
//! pages recursively without remembering where it has been recurses until the stack is
//! gone. Reproduced on a real LMDB data file (an mmap B+tree like bbolt's), read with
//! LMDB's on-disk layout (`mdb.c`, 64-bit little-endian).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use leakgate::fault::pages::Pages;
use leakgate::{CrashCause, Scenario};

use crate::engine::{Engine, EngineResult, Records};
use crate::engines::{LMDB_DATA_FILE, Lmdb, copy_dir_or_nothing};

/// How the check walks the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    /// Recursively, following every child link it reads: bbolt's recursion, which a
    /// cycle turns into a stack overflow.
    Unguarded,
    /// Recursively, refusing a page it has already visited: the fix, which reports the
    /// cycle as an error.
    Guarded,
}

/// Each iteration copies an LMDB environment, duplicates its root page over one of the
/// root's children (a cycle: the child now links back to itself), and runs the recursive
/// consistency check over the copy; with [`Walk::Guarded`] the check must report the
/// cycle, and LMDB itself must refuse the damaged tree with an error.
///
/// [`Walk::Unguarded`] is the incident, pinned as a stack overflow in `count_leaves`;
/// [`Walk::Guarded`] is its twin, which must pass.
pub fn page_cycle_check(walk: Walk) -> Scenario<PathBuf> {
    let scenario = Scenario::new(match walk {
        Walk::Unguarded => "incident/page_cycle_check_unguarded",
        Walk::Guarded => "lmdb/page_cycle_check",
    })
    .warmup(2)
    .iterations(10)
    .setup(|ctx| {
        let pristine = ctx.dir().join("pristine");
        let mut engine = Lmdb::open(&pristine).expect("LMDB opens");
        engine
            .write(&RECORDS.batch(0))
            .expect("the batch is written");
        pristine
    })
    .iterate(move |pristine: &mut PathBuf, i| -> EngineResult<()> {
        let victim = pristine.with_file_name("victim");
        copy_dir_or_nothing(pristine, &victim)?;
        let data = victim.join(LMDB_DATA_FILE);
        link_root_into_cycle(&data, i)?;
        let checked = check(&data, walk);
        if !checked.as_ref().is_err_and(|e| e.contains("cycle")) {
            return Err(format!("the check missed the cycle: {checked:?}").into());
        }
        if Lmdb::open(&victim)
            .and_then(|mut lmdb| RECORDS.verify(&mut lmdb, 0))
            .is_ok()
        {
            return Err("LMDB read every record through a cycle".into());
        }
        std::fs::remove_dir_all(&victim)?;
        Ok(())
    });
    match walk {
        Walk::Unguarded => scenario
            .expect_crash(CrashCause::StackOverflow)
            .expect_site("count_leaves"),
        Walk::Guarded => scenario,
    }
}

/// Enough records for a two-level tree (a branch root over several leaves).
const RECORDS: Records = Records::new(200, 100);

/// Overwrites child `round % children` of the root with a copy of the root.
fn link_root_into_cycle(data: &Path, round: usize) -> EngineResult<()> {
    let tree = LmdbFile::read(data)?;
    let root = tree.root()?;
    let children = tree
        .children(root)?
        .ok_or("the root is a leaf: write more")?;
    let child = children[round % children.len()];
    Pages::open(data, tree.page_size as u64)?.duplicate(root, child)?;
    Ok(())
}

/// The recovery check: counts the leaf pages reachable from the root.
fn check(data: &Path, walk: Walk) -> Result<u64, String> {
    let tree = LmdbFile::read(data).map_err(|e| e.to_string())?;
    let root = tree.root().map_err(|e| e.to_string())?;
    let mut visited = HashSet::new();
    count_leaves(&tree, root, (walk == Walk::Guarded).then_some(&mut visited))
}

/// The leaf pages under `page`. With `visited`, a page reached twice is a cycle and an
/// error; without it the walk trusts every link, which is the planted bug.
#[inline(never)]
fn count_leaves(
    tree: &LmdbFile,
    page: u64,
    mut visited: Option<&mut HashSet<u64>>,
) -> Result<u64, String> {
    if let Some(visited) = visited.as_deref_mut()
        && !visited.insert(page)
    {
        return Err(format!(
            "page {page} is reached twice: the tree has a cycle"
        ));
    }
    let Some(children) = tree.children(page).map_err(|e| e.to_string())? else {
        return Ok(1);
    };
    let mut leaves = 0;
    for child in children {
        leaves += count_leaves(tree, child, visited.as_deref_mut())?;
    }
    Ok(leaves)
}

/// An LMDB data file read into memory, with just enough of the format to walk the main
/// database's tree.
struct LmdbFile {
    bytes: Vec<u8>,
    page_size: usize,
}

/// Page header flags (`mdb.c`).
const P_BRANCH: u16 = 0x01;
const P_LEAF: u16 = 0x02;
/// The page header's size: page number, pad, flags, lower and upper bounds.
const PAGE_HEADER: usize = 16;
/// Offsets into a meta page: the magic, the free-space database's `md_pad` (the page
/// size), the main database's root, and the transaction that wrote the meta page.
const META_MAGIC: usize = PAGE_HEADER;
const META_PAGE_SIZE: usize = PAGE_HEADER + 24;
const META_MAIN_ROOT: usize = PAGE_HEADER + 24 + 48 + 40;
const META_TXNID: usize = PAGE_HEADER + 128;
const MAGIC: u32 = 0xBEEF_C0DE;

impl LmdbFile {
    fn read(path: &Path) -> EngineResult<Self> {
        let bytes = std::fs::read(path)?;
        let mut file = Self {
            bytes,
            page_size: 0,
        };
        if file.u32_at(META_MAGIC)? != MAGIC {
            return Err(format!("{}: not an LMDB data file", path.display()).into());
        }
        let page_size = file.u32_at(META_PAGE_SIZE)? as usize;
        if !page_size.is_power_of_two() || !(512..=65536).contains(&page_size) {
            return Err(format!("{}: page size {page_size}", path.display()).into());
        }
        file.page_size = page_size;
        Ok(file)
    }

    /// The main database's root page, from the newer of the two meta pages.
    fn root(&self) -> EngineResult<u64> {
        let newer = (0..2)
            .max_by_key(|&meta| self.u64_at(meta * self.page_size + META_TXNID).unwrap_or(0))
            .unwrap_or(0);
        let root = self.u64_at(newer * self.page_size + META_MAIN_ROOT)?;
        if root == u64::MAX {
            return Err("the main database is empty".into());
        }
        Ok(root)
    }

    /// The child pages of `page` if it is a branch page, `None` if it is a leaf.
    fn children(&self, page: u64) -> EngineResult<Option<Vec<u64>>> {
        let start = usize::try_from(page)?
            .checked_mul(self.page_size)
            .ok_or("page number out of range")?;
        let flags = self.u16_at(start + 10)?;
        if flags & P_LEAF != 0 {
            return Ok(None);
        }
        if flags & P_BRANCH == 0 {
            return Err(format!("page {page} is neither a branch nor a leaf").into());
        }
        let lower = usize::from(self.u16_at(start + 12)?);
        let keys = lower.saturating_sub(PAGE_HEADER) / 2;
        (0..keys)
            .map(|key| {
                let node = start + usize::from(self.u16_at(start + PAGE_HEADER + 2 * key)?);
                // A branch node's child page number is split over its first three words.
                let (low, high, top) = (
                    u64::from(self.u16_at(node)?),
                    u64::from(self.u16_at(node + 2)?),
                    u64::from(self.u16_at(node + 4)?),
                );
                Ok(low | high << 16 | top << 32)
            })
            .collect::<EngineResult<Vec<u64>>>()
            .map(Some)
    }

    fn bytes_at<const N: usize>(&self, at: usize) -> EngineResult<[u8; N]> {
        self.bytes
            .get(at..at + N)
            .and_then(|slice| slice.try_into().ok())
            .ok_or_else(|| format!("offset {at} is past the end of the file").into())
    }

    fn u16_at(&self, at: usize) -> EngineResult<u16> {
        self.bytes_at(at).map(u16::from_le_bytes)
    }

    fn u32_at(&self, at: usize) -> EngineResult<u32> {
        self.bytes_at(at).map(u32::from_le_bytes)
    }

    fn u64_at(&self, at: usize) -> EngineResult<u64> {
        self.bytes_at(at).map(u64::from_le_bytes)
    }
}
