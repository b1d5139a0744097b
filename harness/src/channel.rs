//! [`Channel`]: the side channel a child process reports on. One JSON event per line,
//! appended to a file the parent made (never stdout, which belongs to libtest), so what
//! the child wrote before it died is still there for the parent to read.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, TryLockError};

use crate::measure::Event;

/// Set in a child: the channel file it appends events to.
pub(crate) const CHANNEL_VAR: &str = "LEAKGATE_CHILD_CHANNEL";
/// Set in a child: the exact name of the scenario to run.
pub(crate) const SCENARIO_VAR: &str = "LEAKGATE_CHILD_SCENARIO";

/// Bytes reserved for one event, so sending one during the measured iterations does not
/// allocate (a larger event grows the buffer once).
const EVENT_BUFFER: usize = 64 << 10;

/// The child's end of the channel. Shared (`Arc`) by the session, the panic hook and the
/// memory-limit watchdog; every event goes out through [`send`](Self::send).
pub(crate) struct Channel {
    file: File,
    buffer: Mutex<Vec<u8>>,
}

impl Channel {
    /// Opens the channel file the parent created.
    pub(crate) fn open(path: &Path) -> std::io::Result<Self> {
        Ok(Self {
            file: OpenOptions::new().append(true).open(path)?,
            buffer: Mutex::new(Vec::with_capacity(EVENT_BUFFER)),
        })
    }

    /// Appends `event` as one line, in one write. Best effort: if the parent is gone,
    /// there is nobody to tell.
    pub(crate) fn send(&self, event: &Event) {
        let mut spare = Vec::new();
        let mut guard = match self.buffer.try_lock() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            // Held by this thread (a panic while sending) or another: a buffer of its
            // own, so the panic hook can never deadlock.
            Err(TryLockError::WouldBlock) => None,
        };
        let line: &mut Vec<u8> = match guard.as_deref_mut() {
            Some(buffer) => buffer,
            None => &mut spare,
        };
        line.clear();
        if serde_json::to_writer(&mut *line, event).is_ok() {
            line.push(b'\n');
            let _ = (&self.file).write_all(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::{Phase, Position};

    #[test]
    fn events_arrive_one_per_line_even_from_a_nested_send() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let channel = Channel::open(file.path()).unwrap();
        let at = Event::At(Position {
            phase: Phase::Setup,
            iteration: None,
        });
        channel.send(&at);
        {
            // The lock held, as during a panic inside `send`.
            let _held = channel.buffer.lock().unwrap();
            channel.send(&Event::Panic {
                message: "boom".into(),
            });
        }
        let text = std::fs::read_to_string(file.path()).unwrap();
        let events: Vec<Event> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            events,
            [
                at,
                Event::Panic {
                    message: "boom".into()
                }
            ]
        );
    }
}
