//! Page corruptors for crash-recovery scenarios: what power loss or a misdirected write
//! leaves in a page-structured file (a B+tree, an LSM table, a WAL).
//!
//! ```
//! # fn main() -> std::io::Result<()> {
//! use leakgate::fault::pages::Pages;
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("data.db");
//! std::fs::write(&path, vec![7u8; 4 * 4096])?;
//! let mut pages = Pages::open(&path, 4096)?.seed(42);
//! pages.duplicate(1, 3)?; // page 3 now claims to be page 1: a cycle for a tree walk
//! let victim = pages.random_page()?;
//! pages.flip_bits(victim, 8)?;
//! pages.truncate_to(3)?; // the last page never made it to disk
//! assert_eq!(pages.page_count()?, 3);
//! # Ok(()) }
//! ```

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// A file seen as fixed-size pages, with ways to damage them. Random choices come from
/// a seeded generator, so a failing run can be replayed.
pub struct Pages {
    path: PathBuf,
    page_size: u64,
    rng: fastrand::Rng,
}

impl Pages {
    /// Opens `path` as pages of `page_size` bytes.
    pub fn open(path: impl AsRef<Path>, page_size: u64) -> io::Result<Self> {
        if page_size == 0 || page_size > 1 << 30 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("page size {page_size}: expected 1 byte to 1 GiB"),
            ));
        }
        let path = path.as_ref().to_owned();
        std::fs::metadata(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        Ok(Self {
            path,
            page_size,
            rng: fastrand::Rng::with_seed(0),
        })
    }

    /// Seeds the choices of [`random_page`](Self::random_page) and
    /// [`flip_bits`](Self::flip_bits).
    pub fn seed(mut self, seed: u64) -> Self {
        self.rng = fastrand::Rng::with_seed(seed);
        self
    }

    /// Whole and partial pages in the file.
    pub fn page_count(&self) -> io::Result<u64> {
        Ok(std::fs::metadata(&self.path)?
            .len()
            .div_ceil(self.page_size))
    }

    /// A page chosen at random.
    pub fn random_page(&mut self) -> io::Result<u64> {
        let count = self.page_count()?;
        if count == 0 {
            return Err(self.error(format_args!("has no pages")));
        }
        Ok(self.rng.u64(..count))
    }

    /// A torn write: only the first half of `new_version` reached `page`; the second half
    /// still holds the old contents.
    pub fn tear(&mut self, page: u64, new_version: &[u8]) -> io::Result<()> {
        // Within the page as it is: the last page of a file may be short.
        let length = self.read_page(page)?.len().min(new_version.len());
        self.write_at(page * self.page_size, &new_version[..length / 2])
    }

    /// A misdirected write: `to` gets a copy of `from` (for a tree, a second parent of
    /// the same children, or a cycle).
    pub fn duplicate(&mut self, from: u64, to: u64) -> io::Result<()> {
        let mut contents = self.read_page(from)?;
        contents.truncate(self.read_page(to)?.len());
        self.write_at(to * self.page_size, &contents)
    }

    /// A page that was allocated but never written: all zeroes.
    pub fn zero(&mut self, page: u64) -> io::Result<()> {
        let length = self.read_page(page)?.len();
        self.write_at(page * self.page_size, &vec![0; length])
    }

    /// Bit rot: flips `bits` distinct bits at random in `page` (all of them if it has
    /// fewer); returns their bit offsets within the page, in order.
    pub fn flip_bits(&mut self, page: u64, bits: u32) -> io::Result<Vec<u64>> {
        let mut contents = self.read_page(page)?;
        let total = contents.len() as u64 * 8;
        let mut flipped = std::collections::BTreeSet::new();
        while (flipped.len() as u64) < u64::from(bits).min(total) {
            flipped.insert(self.rng.u64(..total));
        }
        let flipped: Vec<u64> = flipped.into_iter().collect();
        for &bit in &flipped {
            contents[(bit / 8) as usize] ^= 1 << (bit % 8);
        }
        self.write_at(page * self.page_size, &contents)?;
        Ok(flipped)
    }

    /// Lost tail: the file keeps only its first `pages` pages.
    pub fn truncate_to(&mut self, pages: u64) -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(&self.path)?;
        file.set_len(
            pages
                .saturating_mul(self.page_size)
                .min(file.metadata()?.len()),
        )?;
        file.sync_all()
    }

    /// The contents of `page` (shorter than a page at the end of the file).
    pub fn read_page(&self, page: u64) -> io::Result<Vec<u8>> {
        self.check(page)?;
        let mut file = File::open(&self.path)?;
        file.seek(SeekFrom::Start(page * self.page_size))?;
        let mut contents = Vec::with_capacity(self.page_size as usize);
        file.take(self.page_size).read_to_end(&mut contents)?;
        Ok(contents)
    }

    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let mut file = OpenOptions::new().write(true).open(&self.path)?;
        file.seek(SeekFrom::Start(offset))?;
        file.write_all(bytes)?;
        file.sync_all()
    }

    fn check(&self, page: u64) -> io::Result<()> {
        let count = self.page_count()?;
        if page >= count {
            return Err(self.error(format_args!("has {count} pages; there is no page {page}")));
        }
        Ok(())
    }

    fn error(&self, what: std::fmt::Arguments<'_>) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} {what}", self.path.display()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_of_pages(dir: &Path, pages: u8) -> PathBuf {
        let path = dir.join("pages");
        let contents: Vec<u8> = (0..pages).flat_map(|p| vec![p + 1; 16]).collect();
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn each_corruption_does_what_it_says() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_of_pages(dir.path(), 4);
        let mut pages = Pages::open(&path, 16).unwrap().seed(7);
        pages.tear(0, &[9; 16]).unwrap();
        assert_eq!(pages.read_page(0).unwrap(), [[9; 8], [1; 8]].concat());
        pages.duplicate(1, 2).unwrap();
        assert_eq!(pages.read_page(2).unwrap(), [2; 16]);
        pages.zero(3).unwrap();
        assert_eq!(pages.read_page(3).unwrap(), [0; 16]);
        let flipped = pages.flip_bits(1, 3).unwrap();
        let changed: u32 = pages
            .read_page(1)
            .unwrap()
            .iter()
            .map(|b| (b ^ 2).count_ones())
            .sum();
        assert_eq!((flipped.len(), changed), (3, 3));
        pages.truncate_to(2).unwrap();
        assert_eq!(pages.page_count().unwrap(), 2);
        // The last page may be short: corrupting it never grows the file.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(24)
            .unwrap();
        pages.duplicate(0, 1).unwrap();
        pages.tear(1, &[5; 16]).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 24);
    }

    #[test]
    fn the_same_seed_makes_the_same_choices() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_of_pages(dir.path(), 8);
        let choose = || {
            let mut pages = Pages::open(&path, 16).unwrap().seed(99);
            (0..5)
                .map(|_| pages.random_page().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(choose(), choose());
    }

    #[test]
    fn a_page_out_of_range_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_of_pages(dir.path(), 2);
        let mut pages = Pages::open(&path, 16).unwrap();
        let error = pages.zero(5).unwrap_err().to_string();
        assert!(
            error.contains("pages has 2 pages; there is no page 5"),
            "{error}"
        );
        assert!(Pages::open(dir.path().join("missing"), 16).is_err());
    }
}
