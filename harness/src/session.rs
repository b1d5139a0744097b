//! [`Session`]: one run of one scenario, in the current (child) process. Its methods are
//! its phases:
//!
//! ```text
//!  scratch_dir ─ set_up ─ warm_up ×W ─ (settle) ─ take_baseline
//!    ─ measure ×N [sites recorded, a sample after each]
//!    ─ settle (bounded retries) ─ end sample ─ tear_down ─ after-teardown sample
//!    ─ attribute (symbolize the sites that will be reported)
//! ```
//! The series is preallocated before the baseline and the channel sends through a
//! preallocated buffer, so the harness itself adds nothing to the heap between the
//! baseline and the end sample. The session only measures: the parent judges the
//! measurement and decides what happens to the scratch directory.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use leakgate_reports::{IterationError, ScalePoint};

use crate::alloc::sites::Heap;
use crate::alloc::{self, peak, sites, stack};
use crate::attribution;
use crate::channel::Channel;
use crate::config::Config;
use crate::measure::{Event, Measurement, Phase, Position};
use crate::probe::{self, Inventory, Probe};
use crate::scenario::{Ctx, MIN_ITERATIONS, Scenario};
use crate::tempdirs;
use crate::verdict::{self, Progress};
use crate::watchdog::Watchdog;

/// Longest wait for a leak's survivors to be freed after teardown.
const TEARDOWN_SETTLE: Duration = Duration::from_millis(250);
/// Longest pause between two settling samples.
const MAX_SETTLE_PAUSE: Duration = Duration::from_millis(100);
/// How many times the planned measured iterations an ambiguous run may extend to.
const EXTENSION: usize = 2;
/// Room reserved before the baseline for the note on an early stop or an extension, so
/// writing it during the measured phase does not show as the harness's own growth.
const ADAPTATION_NOTE: usize = 1024;

/// Why a session could not measure at all.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    #[error(
        "the tracking allocator is not installed: add `leakgate::global_allocator!();` to the test target"
    )]
    NoTrackingAllocator,
    #[error("scenario has no iterate function: call `.iterate(..)`")]
    NoIterate,
    #[error("cannot create a scratch directory: {0}")]
    ScratchDir(#[source] std::io::Error),
    #[error("cannot start the memory-limit watchdog thread: {0}")]
    Watchdog(#[source] std::io::Error),
}

/// Runs `scenario` (once per input size when it scales), reporting progress on
/// `channel`.
pub(crate) fn run<S>(
    scenario: &mut Scenario<S>,
    config: &Config,
    channel: &Arc<Channel>,
) -> Result<Measurement, SessionError> {
    if scenario.iterate.is_none() {
        return Err(SessionError::NoIterate);
    }
    if !tracking_allocator_installed() {
        return Err(SessionError::NoTrackingAllocator);
    }
    let sizes = scenario.spec.scaling.clone();
    let Some((&largest, smaller)) = sizes.split_last() else {
        return Session::new(scenario, config, channel).run(0);
    };
    // One whole session per size; the largest size's measurement is judged as usual.
    let mut points = Vec::with_capacity(sizes.len());
    for &size in smaller {
        let m = Session::new(scenario, config, channel).run(size)?;
        points.push(scale_point(size, &m));
        if m.iteration_error.is_some() {
            return Ok(Measurement {
                scaling: points,
                ..m
            });
        }
    }
    let mut m = Session::new(scenario, config, channel).run(largest)?;
    points.push(scale_point(largest, &m));
    m.scaling = points;
    Ok(m)
}

fn scale_point(size: u64, m: &Measurement) -> ScalePoint {
    let baseline = m.series.baseline.map_or(0, |s| s.heap_bytes);
    let peak = m
        .series
        .iterations
        .iter()
        .map(|s| s.heap_peak)
        .max()
        .unwrap_or(baseline);
    let retained = m
        .series
        .end
        .map_or(0, |s| s.heap_bytes as i64 - baseline as i64);
    ScalePoint::new(size, peak.saturating_sub(baseline), retained)
}

/// One session at one input size; consumed by [`run`](Self::run).
struct Session<'a, S> {
    scenario: &'a mut Scenario<S>,
    config: &'a Config,
    channel: &'a Arc<Channel>,
    measured: usize,
    m: Measurement,
    /// Why the measured phase stopped early or was extended, written into room
    /// reserved before the baseline; a note once the end sample is taken.
    adaptation: String,
    /// Whether C heap sites are recorded (jemalloc's hooks installed).
    c_sites: bool,
}

/// Raw survivors by site, and the distinct iterations they came from.
type RawSurvivors = (Vec<sites::SiteSurvivors>, u32);

impl<'a, S> Session<'a, S> {
    fn new(scenario: &'a mut Scenario<S>, config: &'a Config, channel: &'a Arc<Channel>) -> Self {
        let measured = config.scaled(scenario.spec.iterations);
        Self {
            scenario,
            config,
            channel,
            measured,
            m: Measurement {
                measured_iterations: measured as u32,
                ..Measurement::default()
            },
            adaptation: String::new(),
            c_sites: false,
        }
    }

    fn run(mut self, size: u64) -> Result<Measurement, SessionError> {
        let scratch = self.scratch_dir()?;
        let mut watched = vec![scratch.clone()];
        watched.extend(self.scenario.spec.watch_dirs.iter().cloned());
        let probe = Probe::new(watched);
        self.m
            .notes
            .extend(probe::process_heap_note().map(str::to_owned));
        self.m.series.pre_setup = Some(probe.sample());

        let mut state = self.set_up(scratch, size);
        self.warm_up(&mut state);
        let (mut end_survivors, mut end_c_survivors) = (None, None);
        if self.m.iteration_error.is_none() {
            let watchdog = self.start_watchdog()?;
            let inventory = self.take_baseline(&probe, watchdog.as_ref());
            self.measure(&mut state, &probe);
            self.settle(&mut state, &probe, &inventory);
            drop(watchdog);
            let ran = self.m.series.iterations.len() as u32;
            end_survivors = self.config.sites.then(|| sites::survivors(ran, Heap::Rust));
            end_c_survivors = self.c_sites.then(|| sites::survivors(ran, Heap::C));
        }
        let after_survivors = self.tear_down(state, &probe);
        self.attribute(end_survivors, after_survivors);
        self.attribute_c_heap(end_c_survivors);
        Ok(self.m)
    }

    fn at(&self, phase: Phase, iteration: Option<usize>) {
        self.channel.send(&Event::At(Position {
            phase,
            iteration: iteration.map(|i| i as u32),
        }));
    }

    /// Creates the scratch directory and tells the parent, which removes it.
    fn scratch_dir(&self) -> Result<PathBuf, SessionError> {
        let dir =
            tempdirs::scratch_dir(&self.scenario.spec.name).map_err(SessionError::ScratchDir)?;
        self.channel.send(&Event::ScratchDir { path: dir.clone() });
        Ok(dir)
    }

    fn set_up(&mut self, scratch: PathBuf, size: u64) -> S {
        self.at(Phase::Setup, None);
        let ctx = Ctx::new(scratch, self.scenario.spec.name.clone(), size);
        (self.scenario.setup)(&ctx)
    }

    fn warm_up(&mut self, state: &mut S) {
        let iterate = self.scenario.iterate.as_mut().expect("checked by `run`");
        for i in 0..self.scenario.spec.warmup {
            self.channel.send(&Event::At(Position {
                phase: Phase::Warmup,
                iteration: Some(i as u32),
            }));
            if let Err(message) = iterate(state, i) {
                self.m.iteration_error = Some(IterationError::new("warmup", i as u32, message));
                break;
            }
        }
        if let Some(settle) = self.scenario.settle.as_mut() {
            settle(state);
        }
    }

    /// Started before the baseline, so its thread is part of it.
    fn start_watchdog(&self) -> Result<Option<Watchdog>, SessionError> {
        let spec = &self.scenario.spec;
        spec.effective_memory_limit(self.config)
            .map(|limit| Watchdog::start(limit, Arc::clone(self.channel)))
            .transpose()
            .map_err(SessionError::Watchdog)
    }

    /// Takes the baseline and starts recording sites; returns the baseline's inventory.
    fn take_baseline(&mut self, probe: &Probe, watchdog: Option<&Watchdog>) -> Inventory {
        self.at(Phase::Baseline, None);
        // Decided (and noted) before the baseline, so the note is not counted as growth.
        if self.config.sites && stack::detect() == stack::Method::Dwarf {
            self.m
                .notes
                .push(leakgate_reports::text::DWARF_NOTE.to_owned());
        }
        self.adaptation.reserve_exact(ADAPTATION_NOTE);
        // Room for an extension too: growing the series would show as the harness's own
        // heap growth.
        self.m
            .series
            .iterations
            .reserve_exact(self.measured * EXTENSION);
        // Taken before the baseline sample, so the inventory's memory is part of it.
        let inventory = probe.inventory();
        alloc::reset_peak();
        let baseline = probe.sample();
        self.m.series.baseline = Some(baseline);
        self.channel.send(&Event::Sample { sample: baseline });
        if self.config.sites {
            // Sites at the peak are worth their cost only when the peak is judged.
            let policy = &self.scenario.spec.policy;
            let judges_peak = policy.peak_budget.is_some() || policy.expect_growth.is_some();
            if judges_peak || watchdog.is_some() {
                peak::arm(baseline.heap_bytes);
            }
            // Hooks first: Rust's calls must be marked before a table is kept.
            self.c_sites = self.config.c_sites && self.record_c_sites();
            sites::start(0);
        }
        if let Some(watchdog) = watchdog {
            watchdog.arm(baseline.heap_bytes);
        }
        inventory
    }

    /// The measured iterations. Adaptive (`LEAKGATE_ADAPTIVE=on`, a scenario that allows
    /// it): from the minimum on, every tenth of the plan, the judge looks at the evidence
    /// so far ([`verdict::progress`]) and the phase stops early when it is conclusive; at
    /// the planned end, an ambiguous series extends it, up to [`EXTENSION`] times the
    /// plan and as long again as the plan took.
    fn measure(&mut self, state: &mut S, probe: &Probe) {
        let spec = &self.scenario.spec;
        let planned = self.measured;
        // Not under a memory limit either: the checks' own allocations count toward it.
        let adaptive = spec.adaptive_under(self.config);
        let limit = if adaptive {
            planned * EXTENSION
        } else {
            planned
        };
        let min = spec
            .min_iterations
            .unwrap_or(planned / 2)
            .clamp(MIN_ITERATIONS, planned.max(MIN_ITERATIONS));
        let every = (planned / 10).max(5);
        let started = Instant::now();
        // The time budget of an extension: as long again as the planned part took.
        let mut extension_until = None;
        let mut extended = false;
        let iterate = self.scenario.iterate.as_mut().expect("checked by `run`");
        for i in 0..limit {
            sites::set_iteration(i as u32);
            self.channel.send(&Event::At(Position {
                phase: Phase::Measure,
                iteration: Some(i as u32),
            }));
            let outcome = iterate(state, i);
            let sample = probe.sample();
            self.m.series.iterations.push(sample);
            self.channel.send(&Event::Sample { sample });
            if let Err(message) = outcome {
                self.m.iteration_error = Some(IterationError::new("measure", i as u32, message));
                break;
            }
            let ran = i + 1;
            if ran == planned {
                extension_until = Some(started + started.elapsed() * 2);
            }
            let due = ran >= min && (ran == planned || ran % every == 0);
            if !adaptive || !due {
                if ran >= planned && !extended {
                    break;
                }
                continue;
            }
            let in_budget = extension_until.is_none_or(|until| Instant::now() < until);
            // The check's own allocations are the harness's: never sites of the scenario.
            let progress = {
                let _untracked = crate::alloc::ReentrancyGuard::enter();
                let now = self.config.sites.then(|| {
                    let (raw, _) = sites::survivors(ran as u32, Heap::Rust);
                    attribution::unsymbolized(&raw)
                });
                let policy = &self.scenario.spec.policy;
                verdict::progress(&self.m, now.as_deref().unwrap_or(&[]), policy, planned)
            };
            match progress {
                Progress::Conclusive(reason) if ran < planned => {
                    append_within(
                        &mut self.adaptation,
                        format_args!(
                            "stopped early after {ran} of {planned} measured iterations: {reason}"
                        ),
                    );
                    break;
                }
                Progress::Ambiguous(reason) if !extended && in_budget => {
                    extended = true;
                    append_within(
                        &mut self.adaptation,
                        format_args!(
                            "extended beyond the planned {planned} measured iterations (at most \
                             to {limit}, or twice the planned time): {reason}"
                        ),
                    );
                }
                Progress::Ambiguous(_) if in_budget => {}
                _ if ran >= planned => break,
                _ => {}
            }
        }
        sites::stop();
        let ran = self.m.series.iterations.len();
        if extended {
            append_within(&mut self.adaptation, format_args!("; it ran {ran}"));
        }
        self.m.measured_iterations = ran as u32;
    }

    /// Lets deferred frees land, then takes the end sample and names what leaked.
    fn settle(&mut self, state: &mut S, probe: &Probe, baseline: &Inventory) {
        self.at(Phase::Settle, None);
        if let Some(settle) = self.scenario.settle.as_mut() {
            settle(state);
        }
        let policy = &self.scenario.spec.policy;
        let m = &mut self.m;
        m.series.settle_attempts = settle_until(self.config.settle_timeout, || {
            m.series.end = Some(probe.sample());
            verdict::settled(m, policy)
        });
        m.leaked = probe.inventory().new_since(baseline);
    }

    /// Ends the state and samples what it gave back; returns the survivors after it.
    fn tear_down(&mut self, state: S, probe: &Probe) -> Option<RawSurvivors> {
        self.at(Phase::Teardown, None);
        match self.scenario.teardown.as_mut() {
            Some(teardown) => teardown(state),
            None => drop(state),
        }
        // Only a leak's survivors are worth waiting for: they decide whether it is held
        // after teardown or was freed with the state. Teardown joins its own threads, so
        // a short wait covers what is still on its way out.
        let leaky = !verdict::heap_settled(&self.m, &self.scenario.spec.policy);
        let wait = if leaky {
            self.config.settle_timeout.min(TEARDOWN_SETTLE)
        } else {
            Duration::ZERO
        };
        settle_until(wait, || sites::live_tagged_blocks() == 0);
        self.m.series.after_teardown = Some(probe.sample());
        let ran = self.m.series.iterations.len() as u32;
        let survivors = self.config.sites.then(|| sites::survivors(ran, Heap::Rust));
        sites::clear();
        #[cfg(feature = "jemalloc")]
        crate::alloc::c_heap::remove();
        survivors
    }

    /// Installs jemalloc's hooks, so C blocks get sites; a note says why when they cannot.
    fn record_c_sites(&mut self) -> bool {
        #[cfg(feature = "jemalloc")]
        if let Err(error) = crate::alloc::c_heap::install() {
            self.m
                .notes
                .push(format!("C heap sites not recorded: {error}"));
            return false;
        }
        cfg!(feature = "jemalloc")
    }

    /// Ranks the C heap's surviving sites, with stacks when the C heap grew.
    fn attribute_c_heap(&mut self, end: Option<RawSurvivors>) {
        let Some((raw, iterations)) = end else {
            return;
        };
        let measured = self.m.series.iterations.len() as u32;
        let grew = verdict::c_heap_grew(&self.m, &self.scenario.spec.policy);
        self.m.c_heap_survivors = attribution::survivors(&raw, iterations, measured, grew);
    }

    /// Symbolizes the sites that will be reported.
    fn attribute(&mut self, end: Option<RawSurvivors>, after: Option<RawSurvivors>) {
        self.at(Phase::Done, None);
        if !self.adaptation.is_empty() {
            self.m.notes.push(std::mem::take(&mut self.adaptation));
        }
        let measured = self.m.series.iterations.len() as u32;
        let policy = &self.scenario.spec.policy;
        self.m.survivors_after_teardown = after
            .map(|(raw, iterations)| attribution::survivors(&raw, iterations, measured, false));
        if let Some((raw, iterations)) = end {
            self.m.survivors = attribution::survivors(&raw, iterations, measured, false);
            // Frames only for sites a heap finding shows: reading the binary's debug info
            // is the costliest step of a clean scenario's run.
            if !verdict::heap_settled(&self.m, policy) {
                self.m.survivors = attribution::survivors(&raw, iterations, measured, true);
            }
        }
        if self.config.sites && (policy.peak_budget.is_some() || policy.expect_growth.is_some()) {
            self.m.peak_sites = attribution::peak_sites();
        }
    }
}

/// Appends `text` to `note` within its capacity (the rest is cut), so a note whose room
/// was reserved before the baseline never grows the heap.
fn append_within(note: &mut String, text: std::fmt::Arguments<'_>) {
    let mut line = String::new();
    let _ = std::fmt::Write::write_fmt(&mut line, text);
    let room = note.capacity() - note.len();
    let cut = (0..=line.len().min(room))
        .rev()
        .find(|&i| line.is_char_boundary(i))
        .unwrap_or(0);
    note.push_str(&line[..cut]);
}

/// Checks `settled` until it holds or `timeout` passes, with growing pauses between
/// checks (deferred frees by background threads need time, goleak-style). Returns how
/// many checks it took.
fn settle_until(timeout: Duration, mut settled: impl FnMut() -> bool) -> u32 {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    let mut attempts = 1;
    while !settled() && Instant::now() < deadline {
        std::thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
        pause = (pause * 2).min(MAX_SETTLE_PAUSE);
        attempts += 1;
    }
    attempts
}

/// Whether this process's global allocator is leakgate's: an allocation must move its
/// counters.
fn tracking_allocator_installed() -> bool {
    let before = alloc::heap_stats().allocations;
    drop(std::hint::black_box(Box::new(0u64)));
    alloc::heap_stats().allocations != before
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;

    /// A real deferred free: a background thread drops the buffer 30 ms after it is
    /// handed over, and settling must wait for it, checking with growing pauses.
    #[test]
    fn settling_waits_for_a_deferred_free_and_gives_up_at_the_timeout() {
        let (send, receive) = mpsc::channel::<Vec<u8>>();
        let freed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let worker = std::thread::spawn({
            let freed = Arc::clone(&freed);
            move || {
                for buffer in receive {
                    std::thread::sleep(Duration::from_millis(30));
                    drop(buffer);
                    freed.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
        });
        send.send(vec![7u8; 1 << 20]).unwrap();
        let started = Instant::now();
        let attempts = settle_until(Duration::from_secs(5), || {
            freed.load(std::sync::atomic::Ordering::SeqCst)
        });
        let waited = started.elapsed();
        assert!(freed.load(std::sync::atomic::Ordering::SeqCst));
        assert!(waited >= Duration::from_millis(30), "{waited:?}");
        // 1, 2, 4, 8, 16 ms … : a 30 ms free takes more than one check, far fewer than
        // a fixed 1 ms poll would.
        assert!((2..=12).contains(&attempts), "{attempts}");
        drop(send);
        worker.join().unwrap();

        let started = Instant::now();
        let attempts = settle_until(Duration::from_millis(50), || false);
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert!(attempts > 1);
    }
}
