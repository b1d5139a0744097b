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
/// write fails instead of killing the process. Scopes do not nest (an inner one would
/// wait for the outer one forever); panics if the limit cannot be set, rather than run
/// the operation without the fault.
pub fn disk_full<T>(limit_bytes: u64, operation: impl FnOnce() -> T) -> T {
    let _scope = SCOPE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let _limit = FileSizeLimit::set(limit_bytes);
    operation()
}

/// The file-size limit and `SIGXFSZ` disposition in force before, restored on drop.
struct FileSizeLimit {
    previous: libc::rlimit,
    previous_action: libc::sigaction,
}

impl FileSizeLimit {
    fn set(limit_bytes: u64) -> Self {
        // SAFETY: plain system calls on this process. `previous` and `previous_action` are
        // written by the kernel before they are read; `ignore` is a valid disposition.
        unsafe {
            let mut previous: libc::rlimit = std::mem::zeroed();
            assert_eq!(
                libc::getrlimit(libc::RLIMIT_FSIZE, &mut previous),
                0,
                "leakgate::fault::disk_full: getrlimit(RLIMIT_FSIZE) failed: {}",
                std::io::Error::last_os_error()
            );
            let mut ignore: libc::sigaction = std::mem::zeroed();
            ignore.sa_sigaction = libc::SIG_IGN;
            let mut previous_action: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGXFSZ, &ignore, &mut previous_action);
            // Never looser than a limit already in force.
            let limit = libc::rlimit {
                rlim_cur: (limit_bytes as libc::rlim_t).min(previous.rlim_cur),
                rlim_max: previous.rlim_max,
            };
            assert_eq!(
                libc::setrlimit(libc::RLIMIT_FSIZE, &limit),
                0,
                "leakgate::fault::disk_full: setrlimit(RLIMIT_FSIZE) failed: {}",
                std::io::Error::last_os_error()
            );
            Self {
                previous,
                previous_action,
            }
        }
    }
}

impl Drop for FileSizeLimit {
    fn drop(&mut self) {
        // SAFETY: restores exactly what `set` read.
        unsafe {
            libc::setrlimit(libc::RLIMIT_FSIZE, &self.previous);
            libc::sigaction(libc::SIGXFSZ, &self.previous_action, std::ptr::null_mut());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Set in the test's own process, where the limit cannot touch other tests' writes.
    const OWN_PROCESS: &str = "DISK_FULL_TEST_IN_OWN_PROCESS";

    #[test]
    fn writes_past_the_limit_fail_and_the_limit_is_lifted_after() {
        if std::env::var_os(OWN_PROCESS).is_none() {
            // The limit is process-wide: run this test alone, in a process of its own.
            let name =
                "fault::disk::tests::writes_past_the_limit_fail_and_the_limit_is_lifted_after";
            let output = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", name, "--test-threads=1"])
                .env(OWN_PROCESS, "1")
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(output.status.success(), "{stdout}");
            assert!(
                stdout.contains("1 passed"),
                "the test did not run: {stdout}"
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let error = disk_full(4096, || std::fs::write(&path, vec![0u8; 8192])).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::EFBIG), "{error}");
        assert!(disk_full(4096, || std::fs::write(&path, vec![0u8; 1024])).is_ok());
        std::fs::write(&path, vec![0u8; 8192]).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 8192);
    }
}
