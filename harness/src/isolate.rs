//! Running a scenario in a child process (the same test binary, re-executed) and
//! classifying how it ended: finished, panicked, aborted, overflowed its stack, killed by
//! a signal, or timed out.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use leakgate_reports::{Crash, CrashCause};

use crate::alloc::sites::Heap;
use crate::channel::{CHANNEL_VAR, SCENARIO_VAR};
use crate::maps::Mapping;
use crate::measure::{Event, Measurement, MemoryLimitHit, Outcome, PROTOCOL, Phase, Position};

/// Bytes of each output stream kept (the end of it).
const OUTPUT_TAIL: usize = 64 << 10;
/// How often the parent looks whether the child has ended.
const POLL: Duration = Duration::from_millis(10);
/// How long the child's output may stay open after it exited: a process it started
/// and left running may hold the pipes forever.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);

/// How a child's run ended and what it left.
#[derive(Debug)]
pub(crate) struct ChildRun {
    pub outcome: Outcome,
    /// stdout, then stderr (the end of each).
    pub output: String,
    /// The scratch directories it made (one per session), for the parent to remove or
    /// keep.
    pub scratch_dirs: Vec<PathBuf>,
    /// Where the child mapped its code: places the raw addresses of its sites and fault
    /// stack in files.
    pub mappings: Vec<Mapping>,
}

/// Runs scenario `name` in a child process and waits for it, at most `timeout`.
pub(crate) fn run_child(name: &str, timeout: Duration) -> ChildRun {
    spawn_and_wait(name, timeout).unwrap_or_else(|error| ChildRun {
        outcome: Outcome::harness_error(
            "start",
            format!("cannot run the scenario's process: {error}"),
        ),
        output: String::new(),
        scratch_dirs: Vec::new(),
        mappings: Vec::new(),
    })
}

fn spawn_and_wait(name: &str, timeout: Duration) -> std::io::Result<ChildRun> {
    let channel = crate::tempdirs::channel_file()?;
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
    let stdout = TailReader::start(child.stdout.take());
    let stderr = TailReader::start(child.stderr.take());
    let deadline = Instant::now() + timeout;
    let (status, timed_out) = loop {
        if let Some(status) = child.try_wait()? {
            break (status, false);
        }
        if Instant::now() >= deadline {
            // Killing may race with a natural exit; either way `wait` reaps it.
            kill_group(child.id());
            let _ = child.kill();
            break (child.wait()?, true);
        }
        std::thread::sleep(POLL);
    };
    // Whatever the scenario started and left behind must not hang the runner through
    // the pipes it inherited: after a grace period, its whole group is killed.
    let grace = Instant::now() + OUTPUT_GRACE;
    if !(stdout.wait_until(grace) && stderr.wait_until(grace)) {
        kill_group(child.id());
    }
    let grace = Instant::now() + OUTPUT_GRACE;
    let (stdout, stderr) = (stdout.finish(grace), stderr.finish(grace));
    // Lossy: a torn multi-byte character must not cost the lines before it.
    let channel_bytes = std::fs::read(channel.path()).unwrap_or_default();
    let mut streamed = Streamed::read(&String::from_utf8_lossy(&channel_bytes));
    streamed.resolve_sites();
    let fault_stack = crate::crash_stack::from_stderr(&stderr, &streamed.mappings);
    let overflowed = crate::crash_stack::overflowed(&stderr);
    let stderr = crate::crash_stack::without_marker(&stderr);
    let output = format!("{stdout}{stderr}");
    let fault = Fault {
        timed_out: timed_out.then_some(timeout),
        overflowed,
    };
    let crash = classify(status, fault, &streamed, &stderr);
    let outcome = match (crash, streamed.measurement) {
        (None, Some(measurement)) => Outcome::Finished(measurement),
        (crash, _) => {
            let mut crash = crash.unwrap_or_else(|| {
                Crash::new(
                    CrashCause::Harness,
                    "done",
                    Some("the child reported no result".to_owned()),
                )
            });
            if matches!(crash.cause, CrashCause::StackOverflow | CrashCause::Signal) {
                (crash.stack, crash.addresses) = fault_stack;
            }
            Outcome::Crashed {
                crash,
                partial: streamed.partial,
                memory_limit: streamed.memory_limit,
            }
        }
    };
    Ok(ChildRun {
        outcome,
        output,
        scratch_dirs: streamed.scratch_dirs,
        mappings: streamed.mappings,
    })
}

fn kill_group(leader: u32) {
    if let Ok(group) = i32::try_from(leader) {
        // SAFETY: a plain system call on the process group this runner created.
        unsafe { libc::kill(-group, libc::SIGKILL) };
    }
}

/// Reads a child's output stream on a thread, keeping its end.
struct TailReader {
    kept: Arc<Mutex<Vec<u8>>>,
    thread: JoinHandle<()>,
}

impl TailReader {
    fn start(stream: Option<impl Read + Send + 'static>) -> Self {
        let kept = Arc::new(Mutex::new(Vec::new()));
        let thread = std::thread::spawn({
            let kept = Arc::clone(&kept);
            move || {
                let Some(mut stream) = stream else { return };
                let mut buf = [0u8; 8192];
                while let Ok(n @ 1..) = stream.read(&mut buf) {
                    let mut kept = kept.lock().unwrap_or_else(|p| p.into_inner());
                    kept.extend_from_slice(&buf[..n]);
                    if kept.len() > 2 * OUTPUT_TAIL {
                        let excess = kept.len() - OUTPUT_TAIL;
                        kept.drain(..excess);
                    }
                }
            }
        });
        Self { kept, thread }
    }

    /// Waits until the stream has closed or `deadline` passes; whether it closed.
    fn wait_until(&self, deadline: Instant) -> bool {
        while !self.thread.is_finished() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(POLL);
        }
        true
    }

    /// The end of what was read by `deadline`. A reader still blocked then is left to
    /// end with the pipe; its text so far is returned.
    fn finish(self, deadline: Instant) -> String {
        self.wait_until(deadline);
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        let start = kept.len().saturating_sub(OUTPUT_TAIL);
        String::from_utf8_lossy(&kept[start..]).into_owned()
    }
}

/// The child's events, folded.
#[derive(Debug, Default)]
pub(crate) struct Streamed {
    pub position: Option<Position>,
    pub measurement: Option<Measurement>,
    pub partial: Measurement,
    pub panic: Option<String>,
    pub harness_error: Option<String>,
    pub scratch_dirs: Vec<PathBuf>,
    pub memory_limit: Option<MemoryLimitHit>,
    /// Where the child mapped its code, to symbolize its fault stack.
    pub mappings: Vec<Mapping>,
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
                Event::Hello { protocol, .. } if protocol != PROTOCOL => {
                    s.harness_error = Some(format!(
                        "child speaks protocol {protocol}, runner {PROTOCOL}: rebuild the test binary"
                    ));
                }
                Event::Hello { mappings, .. } => s.mappings = mappings,
                Event::At(position) => s.position = Some(position),
                Event::Sample { sample } => match s.position.map(|p| p.phase) {
                    Some(Phase::Baseline) => s.partial.series.baseline = Some(sample),
                    _ => s.partial.series.iterations.push(sample),
                },
                Event::ScratchDir { path } => s.scratch_dirs.push(path),
                Event::Panic { message } => s.panic = Some(message),
                Event::HarnessError { message } => s.harness_error = Some(message),
                Event::Finished { measurement } => s.measurement = Some(*measurement),
                Event::MemoryLimit(hit) => s.memory_limit = Some(hit),
            }
        }
        s
    }

    /// Symbolizes every site stack the child sent, in this process.
    fn resolve_sites(&mut self) {
        let measurement = self
            .measurement
            .iter_mut()
            .flat_map(|m| m.survivors.sites.iter_mut().chain(m.peak_sites.iter_mut()));
        let limit = self
            .memory_limit
            .iter_mut()
            .flat_map(|hit| hit.sites.iter_mut());
        crate::symbolize::resolve_sites(measurement.chain(limit), &self.mappings, Heap::Rust);
        let c_heap = self
            .measurement
            .iter_mut()
            .flat_map(|m| m.c_heap_survivors.sites.iter_mut());
        crate::symbolize::resolve_sites(c_heap, &self.mappings, Heap::C);
    }

    fn phase(&self) -> String {
        self.position
            .map_or_else(|| "start".to_owned(), |p| p.to_string())
    }
}

/// What the runner saw of how a child ended, besides its exit status and output.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Fault {
    /// The timeout, when the runner killed it for running past it.
    pub timed_out: Option<Duration>,
    /// Its fault handler saw the fault as the stack running out.
    pub overflowed: bool,
}

/// The message for a stack overflow the runtime did not report.
const SILENT_OVERFLOW: &str = "the thread overflowed its stack, faulting below the stack \
     pointer in code without stack probes (C code, or the allocator)";

/// Why the child did not finish normally, or `None` if it did.
pub(crate) fn classify(
    status: ExitStatus,
    fault: Fault,
    streamed: &Streamed,
    stderr: &str,
) -> Option<Crash> {
    let timed_out = fault.timed_out;
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
            leakgate_reports::text::bytes(hit.heap as i64),
            leakgate_reports::text::bytes(hit.limit as i64)
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
        .find(|l| l.contains("has overflowed its stack"))
        .or_else(|| {
            let fault_signal = matches!(status.signal(), Some(libc::SIGSEGV | libc::SIGBUS));
            (fault.overflowed && fault_signal).then_some(SILENT_OVERFLOW)
        });
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
        let crash = classify(abort, Fault::default(), &s, text).unwrap();
        assert_eq!(
            (crash.cause, crash.signal.as_deref()),
            (CrashCause::StackOverflow, Some("SIGABRT"))
        );
        assert_eq!(crash.phase, "iteration 0");
        assert_eq!(
            classify(abort, Fault::default(), &s, "").unwrap().cause,
            CrashCause::Abort
        );
        let segv = classify(
            ExitStatus::from_raw(libc::SIGSEGV),
            Fault::default(),
            &s,
            "",
        )
        .unwrap();
        // A fault the handler saw below the stack pointer, at the stack's end: an
        // overflow the runtime did not report (inside C code or the allocator).
        let silent = Fault {
            timed_out: None,
            overflowed: true,
        };
        let overflow = classify(ExitStatus::from_raw(libc::SIGSEGV), silent, &s, "").unwrap();
        assert_eq!(overflow.cause, CrashCause::StackOverflow);
        assert!(
            overflow
                .message
                .as_deref()
                .unwrap()
                .contains("overflowed its stack"),
            "{overflow:?}"
        );
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
            classify(exited(0), Fault::default(), &s, "").unwrap().cause,
            CrashCause::Exit
        );
        let timed_out = Fault {
            timed_out: Some(Duration::from_secs(2)),
            overflowed: false,
        };
        let timeout = classify(ExitStatus::from_raw(libc::SIGKILL), timed_out, &s, "").unwrap();
        assert_eq!((timeout.cause, timeout.signal), (CrashCause::Timeout, None));
        s.panic = Some("boom at src/lib.rs:1:1".to_owned());
        let panic = classify(exited(101), Fault::default(), &s, "").unwrap();
        assert_eq!(
            (panic.cause, panic.exit_code, panic.phase.as_str()),
            (CrashCause::Panic, Some(101), "setup")
        );
    }
}
