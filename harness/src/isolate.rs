//! Running a scenario in a child process (the same test binary, re-executed) and
//! classifying how it ended: finished, panicked, aborted, overflowed its stack, killed by
//! a signal, or timed out.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use leakgate_reports::{Crash, CrashCause, Site};

use crate::measure::{Event, Measurement, PROTOCOL, Phase, Position};

/// Set in a child: the side-channel file it appends events to.
pub(crate) const CHANNEL_VAR: &str = "LEAKGATE_CHILD_CHANNEL";
/// Set in a child: the exact name of the scenario to run.
pub(crate) const SCENARIO_VAR: &str = "LEAKGATE_CHILD_SCENARIO";

/// Bytes of each output stream kept (the end of it).
const OUTPUT_TAIL: usize = 64 << 10;
/// How often the parent looks whether the child has ended.
const POLL: Duration = Duration::from_millis(10);

/// How a child's run ended and what it left.
#[derive(Debug)]
pub(crate) struct ChildRun {
    /// The complete measurement, when the child finished.
    pub measurement: Option<Measurement>,
    /// What it streamed before it ended: baseline and iteration samples.
    pub partial: Measurement,
    pub crash: Option<Crash>,
    /// stdout, then stderr (the end of each).
    pub output: String,
    pub scratch_dir: Option<PathBuf>,
    /// Set when the watchdog stopped it at the memory limit.
    pub memory_limit: Option<MemoryLimitHit>,
}

/// The child's last word before the watchdog stopped it.
#[derive(Debug, Clone)]
pub(crate) struct MemoryLimitHit {
    pub limit: u64,
    pub heap: u64,
    pub sites: Vec<Site>,
}

/// Runs scenario `name` in a child process and waits for it, at most `timeout`.
pub(crate) fn run_child(name: &str, timeout: Duration) -> ChildRun {
    match spawn_and_wait(name, timeout) {
        Ok(run) => run,
        Err(error) => ChildRun {
            measurement: None,
            partial: Measurement::default(),
            crash: Some(Crash::new(
                CrashCause::Harness,
                "start",
                Some(error.to_string()),
            )),
            output: String::new(),
            scratch_dir: None,
            memory_limit: None,
        },
    }
}

fn spawn_and_wait(name: &str, timeout: Duration) -> std::io::Result<ChildRun> {
    let channel = tempfile::Builder::new()
        .prefix("leakgate-channel-")
        .tempfile()?;
    let mut command = Command::new(std::env::current_exe()?);
    if cfg!(feature = "jemalloc") && std::env::var_os("MALLOC_CONF").is_none() {
        // Blocks freed by one thread and parked in its cache still count as allocated;
        // jemalloc's own tally of cached bytes misses some, which reads as C-heap growth.
        command.env("MALLOC_CONF", "tcache:false");
    }
    command
        .args(["--exact", name, "--nocapture"])
        .env(CHANNEL_VAR, channel.path())
        .env(SCENARIO_VAR, name)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout can kill whatever the scenario started.
        .process_group(0);
    // SAFETY: runs in the forked child before exec; prctl is async-signal-safe and only
    // asks the kernel to kill this child if the runner thread that started it dies.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = command.spawn()?;
    let stdout = tail_reader(child.stdout.take());
    let stderr = tail_reader(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let (status, timed_out) = loop {
        if let Some(status) = child.try_wait()? {
            break (status, false);
        }
        if Instant::now() >= deadline {
            // The whole group: helpers the scenario started would keep its output pipes
            // open and hang the runner. Killing may race with a natural exit; either way
            // `wait` reaps it.
            kill_group(child.id());
            let _ = child.kill();
            break (child.wait()?, true);
        }
        std::thread::sleep(POLL);
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let fault_stack = crate::crash_stack::from_stderr(&stderr);
    let stderr = crate::crash_stack::without_marker(&stderr);
    let output = format!("{stdout}{stderr}");
    // Lossy: a torn multi-byte character must not cost the lines before it.
    let channel_bytes = std::fs::read(channel.path()).unwrap_or_default();
    let streamed = Streamed::read(&String::from_utf8_lossy(&channel_bytes));
    let mut crash = classify(status, timed_out.then_some(timeout), &streamed, &stderr);
    if let Some(crash) = crash
        .as_mut()
        .filter(|c| matches!(c.cause, CrashCause::StackOverflow | CrashCause::Signal))
    {
        crash.stack = fault_stack;
    }
    Ok(ChildRun {
        measurement: streamed.measurement.filter(|_| crash.is_none()),
        partial: streamed.partial,
        crash,
        output,
        scratch_dir: streamed.scratch_dir,
        memory_limit: streamed.memory_limit,
    })
}

fn kill_group(leader: u32) {
    if let Ok(group) = i32::try_from(leader) {
        // SAFETY: a plain system call on the process group this runner created.
        unsafe { libc::kill(-group, libc::SIGKILL) };
    }
}

fn tail_reader(stream: Option<impl Read + Send + 'static>) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let Some(mut stream) = stream else {
            return String::new();
        };
        let mut kept: Vec<u8> = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n @ 1..) = stream.read(&mut buf) {
            kept.extend_from_slice(&buf[..n]);
            if kept.len() > 2 * OUTPUT_TAIL {
                kept.drain(..kept.len() - OUTPUT_TAIL);
            }
        }
        let start = kept.len().saturating_sub(OUTPUT_TAIL);
        String::from_utf8_lossy(&kept[start..]).into_owned()
    })
}

/// The child's events, folded.
#[derive(Debug, Default)]
pub(crate) struct Streamed {
    pub position: Option<Position>,
    pub measurement: Option<Measurement>,
    pub partial: Measurement,
    pub panic: Option<String>,
    pub harness_error: Option<String>,
    pub scratch_dir: Option<PathBuf>,
    pub memory_limit: Option<MemoryLimitHit>,
}

impl Streamed {
    /// Folds the channel's lines; a torn last line (the child died mid-write) is skipped.
    pub(crate) fn read(text: &str) -> Self {
        let mut s = Self::default();
        for event in text
            .lines()
            .filter_map(|l| serde_json::from_str::<Event>(l).ok())
        {
            match event {
                Event::Hello { protocol } if protocol != PROTOCOL => {
                    s.harness_error = Some(format!(
                        "child speaks protocol {protocol}, runner {PROTOCOL}: rebuild the test binary"
                    ));
                }
                Event::Hello { .. } => {}
                Event::At(position) => s.position = Some(position),
                Event::Sample { sample } => match s.position.map(|p| p.phase) {
                    Some(Phase::Baseline) => s.partial.series.baseline = Some(sample),
                    _ => s.partial.series.iterations.push(sample),
                },
                Event::ScratchDir { path } => s.scratch_dir = Some(path),
                Event::Panic { message } => s.panic = Some(message),
                Event::HarnessError { message } => s.harness_error = Some(message),
                Event::Finished { measurement } => s.measurement = Some(*measurement),
                Event::MemoryLimit { limit, heap, sites } => {
                    s.memory_limit = Some(MemoryLimitHit { limit, heap, sites });
                }
            }
        }
        s
    }

    fn phase(&self) -> String {
        self.position
            .map_or_else(|| "start".to_owned(), |p| p.to_string())
    }
}

/// Why the child did not finish normally, or `None` if it did.
pub(crate) fn classify(
    status: ExitStatus,
    timed_out: Option<Duration>,
    streamed: &Streamed,
    stderr: &str,
) -> Option<Crash> {
    let crash = |cause, message: Option<String>| {
        let mut crash = Crash::new(cause, streamed.phase(), message);
        crash.signal = status
            .signal()
            .filter(|_| timed_out.is_none())
            .map(signal_name);
        crash.exit_code = status.code();
        crash
    };
    if let Some(timeout) = timed_out {
        let message = format!(
            "still running after {:.1} s (LEAKGATE_TIMEOUT)",
            timeout.as_secs_f64()
        );
        return Some(crash(CrashCause::Timeout, Some(message)));
    }
    if let Some(hit) = &streamed.memory_limit {
        let message = format!(
            "the heap reached {} above baseline, over the memory limit of {}",
            crate::console::bytes(hit.heap as i64),
            crate::console::bytes(hit.limit as i64)
        );
        return Some(crash(CrashCause::MemoryLimit, Some(message)));
    }
    if let Some(error) = &streamed.harness_error {
        return Some(crash(CrashCause::Harness, Some(error.clone())));
    }
    if status.success() && streamed.measurement.is_some() {
        return None;
    }
    let overflow = stderr
        .lines()
        .find(|l| l.contains("has overflowed its stack"));
    if let Some(signal) = status.signal() {
        let cause = match (overflow, signal) {
            (Some(_), _) => CrashCause::StackOverflow,
            // A panic under `panic = "abort"`.
            (None, libc::SIGABRT) if streamed.panic.is_some() => CrashCause::Panic,
            (None, libc::SIGABRT) => CrashCause::Abort,
            _ => CrashCause::Signal,
        };
        let message = overflow
            .map(str::to_owned)
            .or_else(|| streamed.panic.clone())
            .or_else(|| last_line(stderr));
        return Some(crash(cause, message));
    }
    if let Some(message) = &streamed.panic {
        return Some(crash(CrashCause::Panic, Some(message.clone())));
    }
    let message =
        last_line(stderr).unwrap_or_else(|| "exited before reporting a result".to_owned());
    Some(crash(CrashCause::Exit, Some(message)))
}

fn last_line(text: &str) -> Option<String> {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(str::to_owned)
}

/// `SIGSEGV`, `SIGABRT`, …, or `signal 42`.
pub(crate) fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGABRT => "SIGABRT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGTRAP => "SIGTRAP",
        other => return format!("signal {other}"),
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streamed(lines: &[&str]) -> Streamed {
        Streamed::read(&lines.join("\n"))
    }

    #[test]
    fn folds_events_and_skips_a_torn_last_line() {
        let s = streamed(&[
            r#"{"event":"hello","protocol":1}"#,
            r#"{"event":"at","phase":"measure","iteration":3}"#,
            r#"{"event":"sample","sample":{"heap_bytes":1,"heap_blocks":1,"heap_peak":1,"allocations":1,"process_allocated":null,"process_active":null,"process_resident":null}}"#,
            r#"{"event":"panic","mess"#,
        ]);
        assert_eq!(s.phase(), "iteration 3");
        assert_eq!(s.partial.series.iterations.len(), 1);
        assert!(s.panic.is_none());
    }

    #[test]
    fn a_stack_overflow_is_told_apart_from_other_aborts() {
        let s = streamed(&[r#"{"event":"at","phase":"measure","iteration":0}"#]);
        let abort = ExitStatus::from_raw(libc::SIGABRT);
        let text =
            "\nthread 'main' has overflowed its stack\nfatal runtime error: stack overflow\n";
        let crash = classify(abort, None, &s, text).unwrap();
        assert_eq!(
            (crash.cause, crash.signal.as_deref()),
            (CrashCause::StackOverflow, Some("SIGABRT"))
        );
        assert_eq!(crash.phase, "iteration 0");
        assert_eq!(
            classify(abort, None, &s, "").unwrap().cause,
            CrashCause::Abort
        );
        let segv = classify(ExitStatus::from_raw(libc::SIGSEGV), None, &s, "").unwrap();
        assert_eq!(
            (segv.cause, segv.signal.as_deref()),
            (CrashCause::Signal, Some("SIGSEGV"))
        );
    }

    #[test]
    fn panics_timeouts_and_silent_exits_are_crashes() {
        let mut s = streamed(&[r#"{"event":"at","phase":"setup","iteration":null}"#]);
        let exited = |code: i32| ExitStatus::from_raw(code << 8);
        assert_eq!(
            classify(exited(0), None, &s, "").unwrap().cause,
            CrashCause::Exit
        );
        let timeout = classify(
            ExitStatus::from_raw(libc::SIGKILL),
            Some(Duration::from_secs(2)),
            &s,
            "",
        )
        .unwrap();
        assert_eq!((timeout.cause, timeout.signal), (CrashCause::Timeout, None));
        s.panic = Some("boom at src/lib.rs:1:1".to_owned());
        let panic = classify(exited(101), None, &s, "").unwrap();
        assert_eq!(
            (panic.cause, panic.exit_code, panic.phase.as_str()),
            (CrashCause::Panic, Some(101), "setup")
        );
    }
}
