//! toykv: a toy key-value store with a write-ahead log, for leakgate's adoption check.
//! Writes append to `wal.log`; a checkpoint folds the log into `data.db` and truncates
//! it; the index lives in memory.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// An open store.
pub struct ToyKv {
    dir: PathBuf,
    index: BTreeMap<Vec<u8>, Vec<u8>>,
    wal: File,
}

const DATA: &str = "data.db";
const WAL: &str = "wal.log";

fn encode(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
}

fn decode(bytes: &[u8], index: &mut BTreeMap<Vec<u8>, Vec<u8>>) -> io::Result<()> {
    let mut at = 0;
    while at + 8 <= bytes.len() {
        let key_len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let value_len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        let end = at + 8 + key_len + value_len;
        let record = bytes
            .get(at + 8..end)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "torn record"))?;
        index.insert(record[..key_len].to_vec(), record[key_len..].to_vec());
        at = end;
    }
    Ok(())
}

fn read_file(path: &Path) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut file) => file.read_to_end(&mut bytes).map(|_| bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(bytes),
        Err(e) => Err(e),
    }
}

impl ToyKv {
    /// Opens the store in `dir`, creating it, and replays its files.
    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut index = BTreeMap::new();
        decode(&read_file(&dir.join(DATA))?, &mut index)?;
        decode(&read_file(&dir.join(WAL))?, &mut index)?;
        let wal = OpenOptions::new().create(true).append(true).open(dir.join(WAL))?;
        Ok(Self {
            dir: dir.to_owned(),
            index,
            wal,
        })
    }

    /// Writes `records` to the log, then the index.
    pub fn write(&mut self, records: &[(Vec<u8>, Vec<u8>)]) -> io::Result<()> {
        let mut batch = Vec::new();
        for (key, value) in records {
            encode(&mut batch, key, value);
        }
        self.wal.write_all(&batch)?;
        for (key, value) in records {
            self.index.insert(key.clone(), value.clone());
        }
        Ok(())
    }

    /// The value of `key`.
    pub fn read(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.index.get(key).cloned()
    }

    /// Folds the log into `data.db` (through a temporary file and a rename) and empties it.
    pub fn checkpoint(&mut self) -> io::Result<()> {
        let mut data = Vec::new();
        for (key, value) in &self.index {
            encode(&mut data, key, value);
        }
        let staging = self.dir.join("data.db.tmp");
        std::fs::write(&staging, &data)?;
        std::fs::rename(&staging, self.dir.join(DATA))?;
        self.wal.set_len(0)?;
        Ok(())
    }

    /// Copies a checkpointed store into `to`.
    pub fn backup(&mut self, to: &Path) -> io::Result<()> {
        self.checkpoint()?;
        std::fs::copy(self.dir.join(DATA), to.join(DATA))?;
        Ok(())
    }
}
