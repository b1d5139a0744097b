//! Leakgate's files in the system temp directory: scenarios' scratch directories and
//! the parent's channel files. Each name carries the id of the runner process that owns
//! it (`leakgate-<pid>-…`, `leakgate-channel-<pid>-…`): the parent, which removes or keeps
//! a scratch directory once it has judged the run, also when the child that made it has
//! died. So a later run can remove what a killed run left behind ([`remove_stale`])
//! without touching a live run's files. A
//! scratch directory kept for a failed scenario is renamed `leakgate-kept-…`, which no
//! cleanup removes.

use std::path::{Path, PathBuf};

/// Prefix of every name leakgate gives a temp file or directory.
const PREFIX: &str = "leakgate-";
/// Prefix of a channel file, after [`PREFIX`].
const CHANNEL: &str = "channel-";
/// Prefix of a kept scratch directory, after [`PREFIX`].
const KEPT: &str = "kept-";

/// Creates a scratch directory for `scenario` in a child, owned by its parent (the
/// runner). It is not removed on drop: the parent removes it once it has judged the run,
/// or keeps it.
pub(crate) fn scratch_dir(scenario: &str) -> std::io::Result<PathBuf> {
    let dir = tempfile::Builder::new()
        .prefix(&format!(
            "{PREFIX}{}-{}-",
            std::os::unix::process::parent_id(),
            file_safe(scenario)
        ))
        .tempdir()?;
    Ok(dir.keep())
}

/// Creates a channel file owned by this (parent) process, removed on drop.
pub(crate) fn channel_file() -> std::io::Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(&format!("{PREFIX}{CHANNEL}{}-", std::process::id()))
        .tempfile()
}

/// Renames a scratch directory so that no cleanup removes it; returns the new path.
pub(crate) fn keep(dir: &Path) -> std::io::Result<PathBuf> {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let Some(rest) = name
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.split_once('-'))
        .map(|(_, rest)| rest)
    else {
        return Ok(dir.to_owned());
    };
    let kept = dir.with_file_name(format!("{PREFIX}{KEPT}{rest}"));
    std::fs::rename(dir, &kept)?;
    Ok(kept)
}

/// Removes a scratch directory; one that is already gone is not an error.
pub(crate) fn remove(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// Removes the scratch directories and channel files in the temp directory whose owning
/// process no longer exists (a run killed by `kill -9` or a CI timeout). Returns how
/// many it removed.
pub(crate) fn remove_stale() -> usize {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .and_then(owner)
                .is_some_and(|pid| !process_exists(pid))
        })
        .filter(|entry| {
            let path = entry.path();
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => std::fs::remove_dir_all(&path).is_ok(),
                Ok(_) => std::fs::remove_file(&path).is_ok(),
                Err(_) => false,
            }
        })
        .count()
}

/// The process id in a leakgate temp name, or `None` for other names and kept dirs.
fn owner(name: &str) -> Option<i32> {
    let rest = name.strip_prefix(PREFIX)?;
    let rest = rest.strip_prefix(CHANNEL).unwrap_or(rest);
    let (pid, _) = rest.split_once('-')?;
    pid.parse().ok().filter(|&pid| pid > 0)
}

/// Whether `pid` names a process that still runs: a zombie (dead, not yet reaped, as
/// orphans can stay where nothing reaps them) does not.
fn process_exists(pid: i32) -> bool {
    // Signal 0 checks existence and permission only; EPERM means it exists.
    // SAFETY: a plain system call with no memory arguments.
    let exists = unsafe { libc::kill(pid, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    exists && !is_zombie(pid)
}

fn is_zombie(pid: i32) -> bool {
    // `pid (comm) S …`: the state follows the last `)`, since comm may hold one.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let (_, rest) = stat.rsplit_once(')')?;
            rest.split_whitespace().next().map(|state| state == "Z")
        })
        .unwrap_or(false)
}

/// `a/b c` → `a_b_c`, for file names.
pub(crate) fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_their_owner_and_kept_dirs_have_none() {
        assert_eq!(
            owner("leakgate-4242-sqlite_checkpoint_loop-Ab3dE1"),
            Some(4242)
        );
        assert_eq!(owner("leakgate-channel-17-x1y2z3"), Some(17));
        assert_eq!(owner("leakgate-kept-sqlite_checkpoint_loop-Ab3dE1"), None);
        assert_eq!(owner("leakgate-0-x"), None);
        assert_eq!(owner("rustc-1234-x"), None);
    }

    #[test]
    fn a_dead_owners_leftovers_are_removed_and_a_live_ones_are_not() {
        // A child that has exited and been reaped: its pid names no process.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let tmp = std::env::temp_dir();
        let stale = tmp.join(format!("leakgate-{dead}-unit_test-stale"));
        let stale_channel = tmp.join(format!("leakgate-channel-{dead}-unit"));
        let live = scratch_dir("unit/test live").unwrap();
        std::fs::create_dir_all(stale.join("db")).unwrap();
        std::fs::write(&stale_channel, "{}").unwrap();
        let removed = remove_stale();
        let (stale_left, channel_left, live_left) =
            (stale.exists(), stale_channel.exists(), live.exists());
        let kept = keep(&live).unwrap();
        let kept_name = kept.file_name().unwrap().to_string_lossy().into_owned();
        remove(&kept).unwrap();
        assert!(removed >= 2, "{removed}");
        assert_eq!((stale_left, channel_left, live_left), (false, false, true));
        assert!(
            kept_name.starts_with("leakgate-kept-unit_test_live-"),
            "{kept_name}"
        );
        assert!(!kept.exists());
    }
}
