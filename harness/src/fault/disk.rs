//! A full disk, scoped to one operation.

use std::sync::Mutex;

/// Serialises `disk_full` scopes: the limit is process-wide.
static SCOPE: Mutex<()> = Mutex::new(());

/// Runs `operation` as if the disk filled up: any write that would make a file larger
/// than `limit_bytes` fails with `EFBIG` ("File too large"), as a full disk fails with
/// `ENOSPC`. Everything the process writes during the operation is affected, by any
/// thread; the previous limit comes back afterwards, also if `operation` panics.
///
/// Implemented with `RLIMIT_FSIZE`, with `SIGXFSZ` ignored for the duration so the
/// write fails instead of killing the process.
pub fn disk_full<T>(limit_bytes: u64, operation: impl FnOnce() -> T) -> T {
    let _scope = SCOPE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let _limit = FileSizeLimit::set(limit_bytes);
    operation()
}

/// The file-size limit and `SIGXFSZ` disposition in force before, restored on drop.
struct FileSizeLimit {
    previous: Option<libc::rlimit>,
    previous_handler: libc::sighandler_t,
}

impl FileSizeLimit {
    fn set(limit_bytes: u64) -> Self {
        // SAFETY: plain system calls on this process; `current` is written by getrlimit
        // before it is read, and SIG_IGN is a valid disposition for SIGXFSZ.
        unsafe {
            let previous_handler = libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let mut current: libc::rlimit = std::mem::zeroed();
            let previous =
                (libc::getrlimit(libc::RLIMIT_FSIZE, &mut current) == 0).then_some(current);
            if let Some(current) = previous {
                let limit = libc::rlimit {
                    rlim_cur: (limit_bytes as libc::rlim_t).min(current.rlim_max),
                    rlim_max: current.rlim_max,
                };
                libc::setrlimit(libc::RLIMIT_FSIZE, &limit);
            }
            Self {
                previous,
                previous_handler,
            }
        }
    }
}

impl Drop for FileSizeLimit {
    fn drop(&mut self) {
        // SAFETY: restores exactly what `set` read.
        unsafe {
            if let Some(previous) = &self.previous {
                libc::setrlimit(libc::RLIMIT_FSIZE, previous);
            }
            libc::signal(libc::SIGXFSZ, self.previous_handler);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_past_the_limit_fail_and_the_limit_is_lifted_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let error = disk_full(4096, || std::fs::write(&path, vec![0u8; 8192])).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::EFBIG), "{error}");
        assert!(disk_full(4096, || std::fs::write(&path, vec![0u8; 1024])).is_ok());
        std::fs::write(&path, vec![0u8; 8192]).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 8192);
    }
}
