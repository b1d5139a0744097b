//! One run of one scenario, in the current process.
//!
//! ```text
//!  pre-setup sample ─ setup ─ warm-up ×W ─ settle ─ baseline
//!    ─ [record sites] measured ×N (sample after each) [stop]
//!    ─ settle + retries ─ end sample ─ teardown ─ after-teardown sample ─ symbolize
//! ```
//! The series is preallocated before the baseline and events are written with a
//! preallocated buffer, so the harness itself adds nothing to the heap between the
//! baseline and the end sample.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use leakgate_reports::{IterationError, ScalePoint, Site, Verdict};

use crate::alloc::{self, peak, sites, stack};
use crate::config::{Config, KeepDirs};
use crate::isolate::CHANNEL_VAR;
use crate::measure::{Event, Measurement, Phase, Position, Survivors};
use crate::probe::{self, Probe};
use crate::scenario::{Ctx, Scenario};
use crate::symbolize::symbolize;
use crate::verdict::{self, MAX_SITES};
use crate::watchdog::Watchdog;

/// Longest wait for a leak's survivors to be freed after teardown.
const TEARDOWN_SETTLE: Duration = Duration::from_millis(250);
/// Longest pause between two settling samples.
const MAX_SETTLE_PAUSE: Duration = Duration::from_millis(100);

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

/// Runs `scenario`, streaming progress to `emit`.
pub(crate) fn run<S>(
    scenario: &mut Scenario<S>,
    config: &Config,
    emit: &mut dyn FnMut(&Event),
) -> Result<Measurement, SessionError> {
    let sizes = scenario.spec.scaling.clone();
    let Some((&largest, smaller)) = sizes.split_last() else {
        return run_at(scenario, config, emit, 0);
    };
    // One whole session per size; the largest size's measurement is judged as usual.
    let mut points = Vec::with_capacity(sizes.len());
    for &size in smaller {
        let m = run_at(scenario, config, emit, size)?;
        points.push(scale_point(size, &m));
        if m.iteration_error.is_some() {
            return Ok(Measurement {
                scaling: points,
                ..m
            });
        }
    }
    let mut m = run_at(scenario, config, emit, largest)?;
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

/// One session at input size `size`.
fn run_at<S>(
    scenario: &mut Scenario<S>,
    config: &Config,
    emit: &mut dyn FnMut(&Event),
    size: u64,
) -> Result<Measurement, SessionError> {
    let Some(iterate) = scenario.iterate.as_mut() else {
        return Err(SessionError::NoIterate);
    };
    if !tracking_allocator_installed() {
        return Err(SessionError::NoTrackingAllocator);
    }
    let spec = &scenario.spec;
    let measured = config.scaled(spec.iterations);
    // Sites at the peak are worth their cost only when the peak is judged.
    let judges_peak = spec.policy.peak_budget.is_some() || spec.policy.expect_growth.is_some();
    let scratch = tempfile::Builder::new()
        .prefix(&format!("leakgate-{}-", file_safe(&spec.name)))
        .tempdir()
        .map_err(SessionError::ScratchDir)?;
    emit(&Event::ScratchDir {
        path: scratch.path().to_owned(),
    });

    let mut watched = vec![scratch.path().to_owned()];
    watched.extend(spec.watch_dirs.iter().cloned());
    let probe = Probe::new(watched);
    let mut m = Measurement {
        measured_iterations: measured as u32,
        ..Measurement::default()
    };
    m.notes
        .extend(probe::process_heap_note().map(str::to_owned));
    m.series.pre_setup = Some(probe.sample());
    at(emit, Phase::Setup, None);
    let ctx = Ctx::new(scratch.path().to_owned(), spec.name.clone(), size);
    let mut state = (scenario.setup)(&ctx);

    for i in 0..spec.warmup {
        at(emit, Phase::Warmup, Some(i));
        if let Err(message) = iterate(&mut state, i) {
            m.iteration_error = Some(IterationError::new("warmup", i as u32, message));
            break;
        }
    }
    if let Some(settle) = scenario.settle.as_mut() {
        settle(&mut state);
    }

    if m.iteration_error.is_none() {
        at(emit, Phase::Baseline, None);
        // Decided (and noted) before the baseline, so the note is not counted as growth.
        if config.sites && stack::detect() == stack::Method::Dwarf {
            m.notes.push(
                "allocation sites captured by DWARF unwinding (slow); build with \
                 RUSTFLAGS=\"-C force-frame-pointers=yes\" for fast capture"
                    .to_owned(),
            );
        }
        m.series.iterations.reserve_exact(measured);
        // Started before the baseline, so its thread is part of it.
        let limit = spec
            .memory_limit
            .or(config.memory_limit)
            .or(spec.policy.peak_budget.map(|b| b.saturating_mul(4)));
        let watchdog = match limit {
            Some(limit) => Some(
                Watchdog::start(limit, std::env::var_os(CHANNEL_VAR).map(PathBuf::from))
                    .map_err(SessionError::Watchdog)?,
            ),
            None => None,
        };
        // Taken before the baseline sample, so the inventory's memory is part of it.
        let baseline_inventory = probe.inventory();
        alloc::reset_peak();
        let baseline = probe.sample();
        m.series.baseline = Some(baseline);
        emit(&Event::Sample { sample: baseline });
        if config.sites {
            if judges_peak || watchdog.is_some() {
                peak::arm(baseline.heap_bytes);
            }
            sites::start(0);
        }
        if let Some(watchdog) = &watchdog {
            watchdog.arm(baseline.heap_bytes);
        }
        for i in 0..measured {
            sites::set_iteration(i as u32);
            at(emit, Phase::Measure, Some(i));
            let outcome = iterate(&mut state, i);
            let sample = probe.sample();
            m.series.iterations.push(sample);
            emit(&Event::Sample { sample });
            if let Err(message) = outcome {
                m.iteration_error = Some(IterationError::new("measure", i as u32, message));
                break;
            }
        }
        sites::stop();

        at(emit, Phase::Settle, None);
        if let Some(settle) = scenario.settle.as_mut() {
            settle(&mut state);
        }
        m.series.settle_attempts = settle_until(config.settle_timeout, || {
            m.series.end = Some(probe.sample());
            verdict::settled(&m, &spec.policy)
        });
        m.leaked = probe.inventory().new_since(&baseline_inventory);
        drop(watchdog);
    }
    let end_survivors = config.sites.then(sites::survivors);

    at(emit, Phase::Teardown, None);
    match scenario.teardown.as_mut() {
        Some(teardown) => teardown(state),
        None => drop(state),
    }
    let leaky = !verdict::heap_settled(&m, &spec.policy);
    // Only a leak's survivors are worth waiting for: they decide whether it is held
    // after teardown or was freed with the state. Teardown joins its own threads, so a
    // short wait covers what is still on its way out.
    let teardown_wait = if leaky {
        config.settle_timeout.min(TEARDOWN_SETTLE)
    } else {
        Duration::ZERO
    };
    settle_until(teardown_wait, || sites::live_tagged_blocks() == 0);
    m.series.after_teardown = Some(probe.sample());
    let after_survivors = config.sites.then(sites::survivors);
    sites::clear();

    at(emit, Phase::Done, None);
    if let Some((sites, iterations)) = end_survivors {
        m.survivors = resolve(sites, iterations, measured as u32);
    }
    m.survivors_after_teardown =
        after_survivors.map(|(sites, iterations)| resolve(sites, iterations, measured as u32));
    if config.sites && judges_peak {
        m.peak_sites = peak_sites();
    }

    let failed = verdict::analyze(&m, &spec.policy).verdict != Verdict::Pass;
    if config.keep_dirs == KeepDirs::Always || (failed && config.keep_dirs == KeepDirs::OnFailure) {
        let kept = scratch.keep();
        m.notes
            .push(format!("scratch directory kept at {}", kept.display()));
    }
    Ok(m)
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

/// Ranks the surviving sites and symbolizes those that will be reported.
fn resolve(raw: Vec<sites::SiteSurvivors>, iterations: u32, measured: u32) -> Survivors {
    let mut ranked: Vec<(Site, u32)> = raw
        .iter()
        .map(|s| {
            let site = Site::new(
                s.bytes,
                s.blocks,
                s.iterations,
                s.first_iteration,
                s.last_iteration,
            );
            (site, s.site)
        })
        .collect();
    verdict::rank_sites(&mut ranked, measured, |(site, _)| site);
    let reported = ranked
        .into_iter()
        .take(MAX_SITES)
        .map(|(mut site, id)| {
            site.frames = symbolize(&sites::site_frames(id));
            site
        })
        .collect();
    Survivors {
        recorded: true,
        bytes: raw.iter().map(|s| s.bytes).sum(),
        blocks: raw.iter().map(|s| s.blocks).sum(),
        iterations,
        sites: reported,
    }
}

/// The sites that made the heap's peak, symbolized.
pub(crate) fn peak_sites() -> Vec<Site> {
    let (top, _) = peak::top(MAX_SITES);
    top.into_iter()
        .map(|(id, bytes)| {
            let mut site = Site::new(bytes, 0, 0, 0, 0);
            site.frames = symbolize(&sites::site_frames(id));
            site
        })
        .collect()
}

/// Whether this process's global allocator is leakgate's: an allocation must move its
/// counters.
fn tracking_allocator_installed() -> bool {
    let before = alloc::heap_stats().allocations;
    drop(std::hint::black_box(Box::new(0u64)));
    alloc::heap_stats().allocations != before
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

fn at(emit: &mut dyn FnMut(&Event), phase: Phase, iteration: Option<usize>) {
    emit(&Event::At(Position {
        phase,
        iteration: iteration.map(|i| i as u32),
    }));
}
