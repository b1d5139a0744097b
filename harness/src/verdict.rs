//! The verdict: [`judge`], a pure function of a run's [`Outcome`] and a scenario's
//! [`Policy`], and the only place a verdict is decided: finished runs, crashes, pinned
//! crashes and the memory limit alike.
//!
//! A crash is `crashed`, unless the scenario pinned it with `expect_crash` (then it
//! passes when the cause matches and `expect_site`, if given, names a frame anywhere in
//! the fault stack, the recursion, or the panic's message and location) or the watchdog
//! stopped it at the memory limit (then it is a `peak` finding, judged like any other).
//! A scenario that pinned a crash and finished fails.
//!
//! Descriptors, threads and files leak when, after settling, there are more than at the
//! baseline (beyond their tolerance, default 0): each one is named. Memory and disk
//! bytes fluctuate, so they leak when, after settling, they are above the baseline by
//! more than the tolerance *and* grew to the end of the run ([`Trend`]): a positive
//! robust (Theil–Sen) slope, new highs above the series' noise in at least two
//! iterations, a floor that rose, and no plateau ([`Persistence`]). That lets through a
//! lazy static made mid-run (one step), caches that fill early or slowly and then evict,
//! a buffer that grows and then stays, and a sawtooth such as a WAL truncated by
//! checkpoints, and catches steady leaks, every-k-th-iteration leaks, leaks that start
//! late and amortised growth such as a `Vec` that keeps doubling. Surviving blocks
//! grouped by site convict on their own when they accumulate over the whole run
//! ([`accumulates`]) while the live block count grows with them, so a leak hidden under
//! churn is found; accumulating sites rank first, since a leak leaves blocks from every
//! part of the run and a bounded cache only from its end. [`progress`] makes the
//! runner's mid-run decisions (stop early, extend) from the same rules.

use leakgate_reports::{
    Crash, CrashCause, Finding, Resource, ScalePoint, Scaling, Site, TrendStatistics, Verdict,
};

use crate::measure::{Measurement, MemoryLimitHit, Outcome};
use crate::scenario::{Growth, Policy};
use leakgate_reports::text::bytes;

/// One value of a sample (`None` where that probe did not run).
type SampleValue = fn(&leakgate_reports::Sample) -> Option<u64>;

/// Sites kept per finding.
pub(crate) const MAX_SITES: usize = 10;
/// Points the slope is fitted on at most (evenly spaced), to bound the pairwise work.
const MAX_TREND_POINTS: usize = 256;

/// Peak differences below this are noise: each thread folds its allocations into the
/// peak counter every 16 KiB.
const PEAK_NOISE: u64 = 64 << 10;
/// How many leaked things a message names before "and N more".
const NAMED_IN_MESSAGE: usize = 3;

/// The verdict, its reason, and the leaks found.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Analysis {
    pub verdict: Verdict,
    pub summary: String,
    pub findings: Vec<Finding>,
    pub notes: Vec<String>,
    /// The curve fitted to peak memory against input size, for scaling scenarios.
    pub scaling: Option<Scaling>,
    /// The trend statistics of the byte series the verdict read.
    pub statistics: Vec<TrendStatistics>,
}

/// The verdict once the scenario is compared with its baseline: a pass that regressed
/// against it fails, saying what regressed; anything else stands.
pub(crate) fn against_baseline(
    verdict: Verdict,
    summary: &str,
    comparison: &leakgate_reports::baseline::Comparison,
) -> (Verdict, String) {
    match comparison.regression() {
        Some(regression) if verdict == Verdict::Pass => (Verdict::Fail, regression),
        _ => (verdict, summary.to_owned()),
    }
}

/// Judges how a scenario's run ended.
pub(crate) fn judge(outcome: &Outcome, policy: &Policy) -> Analysis {
    match outcome {
        Outcome::Finished(m) => {
            let mut analysis = analyze(m, policy);
            if let Some(cause) = policy
                .expect_crash
                .filter(|_| analysis.verdict == Verdict::Pass)
            {
                analysis.verdict = Verdict::Fail;
                analysis.summary =
                    format!("expected a crash ({cause:?}), but the scenario finished");
            }
            analysis
        }
        Outcome::Crashed {
            crash,
            memory_limit: Some(hit),
            ..
        } => memory_limit_analysis(hit, crash, policy),
        Outcome::Crashed { crash, .. } if policy.expect_crash == Some(crash.cause) => {
            let (verdict, summary) = match crash_misattribution(crash, policy) {
                None => (
                    Verdict::Pass,
                    format!("expected crash found: {}", crash_summary(crash)),
                ),
                Some(error) => (Verdict::Fail, error),
            };
            Analysis::new(verdict, summary)
        }
        Outcome::Crashed { crash, .. } => Analysis::new(Verdict::Crashed, crash_summary(crash)),
    }
}

impl Analysis {
    fn new(verdict: Verdict, summary: String) -> Self {
        Self {
            verdict,
            summary,
            findings: Vec::new(),
            notes: Vec::new(),
            scaling: None,
            statistics: Vec::new(),
        }
    }
}

/// A scenario the watchdog stopped at the memory limit: a `peak` finding with the sites
/// at the peak, judged like any other (it passes if a peak leak was expected).
fn memory_limit_analysis(hit: &MemoryLimitHit, crash: &Crash, policy: &Policy) -> Analysis {
    let mut finding = Finding::new(Resource::Peak, hit.heap as i64, 0);
    finding.expected = policy.expect.contains(&Resource::Peak);
    finding.message = format!(
        "heap reached {} above baseline in {}, over the memory limit of {}: stopped",
        bytes(hit.heap as i64),
        crash.phase,
        bytes(hit.limit as i64)
    );
    finding.sites = hit.sites.clone();
    let recorded = SitesRecorded {
        heap: true,
        c_heap: false,
    };
    let misattributed = misattribution(std::slice::from_ref(&finding), policy, recorded);
    let (verdict, summary) = match (finding.expected, misattributed) {
        (true, None) => (
            Verdict::Pass,
            format!("expected leak found: {}", finding.message),
        ),
        (true, Some(error)) => (Verdict::Fail, error),
        (false, _) => (Verdict::Fail, finding.message.clone()),
    };
    let mut analysis = Analysis::new(verdict, summary);
    analysis.findings.push(finding);
    analysis
}

/// One line for a crash: cause, phase, message, and where it was.
pub(crate) fn crash_summary(crash: &Crash) -> String {
    let how = match (crash.cause, crash.signal.as_deref()) {
        (CrashCause::StackOverflow, Some(signal)) => format!("stack overflow ({signal})"),
        (CrashCause::StackOverflow, None) => "stack overflow".to_owned(),
        (CrashCause::Abort, _) => "aborted (SIGABRT)".to_owned(),
        (CrashCause::Signal, Some(signal)) => format!("killed by {signal}"),
        (CrashCause::Panic, _) => "panicked".to_owned(),
        (CrashCause::Timeout, _) => "timed out".to_owned(),
        (CrashCause::MemoryLimit, _) => "stopped at the memory limit".to_owned(),
        (CrashCause::Exit, _) => match crash.exit_code {
            Some(code) => format!("exited with code {code} before reporting a result"),
            None => "exited before reporting a result".to_owned(),
        },
        _ => "could not be run".to_owned(),
    };
    let mut summary = format!("crashed: {how} in {}", crash.phase);
    if let Some(message) = &crash.message {
        summary = format!("{summary}: {message}");
    }
    match (
        crate::crash_stack::recursion(&crash.stack),
        crash.stack.first(),
    ) {
        (Some(function), _) => format!("{summary}; recursing through {function}"),
        (None, Some(frame)) => format!("{summary}; at {}", frame.function),
        (None, None) => summary,
    }
}

/// What the runner does next in a scenario's measured phase.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Progress {
    /// Nothing conclusive yet: go on as planned (at the planned end: stop).
    Continue,
    /// Conclusive before the planned end (leaking or clean, as the reason says): stop.
    Conclusive(String),
    /// At or past the planned end, and ambiguous: measure more, for this reason.
    Ambiguous(String),
}

/// Whether the measured phase can stop, must go on, or should be extended, from what
/// was measured so far (`m`) and the survivors by site now (`sites`, unsymbolized).
///
/// - Conclusively leaking, before the plan's end: a site's survivors accumulate
///   ([`accumulates`]) from at least 90% of the iterations so far, beyond the tolerance
///   and the heap's noise.
/// - Conclusively clean, before the plan's end: no byte count (heap, C heap, disk) set a
///   new high above its noise in the last half of the iterations so far, nor for twice
///   as long as it had risen before, nor has a floor still rising under its swings
///   ([`Trend::floor_still_rising`]), descriptors,
///   threads and paths are back at their baseline, and no site's survivors span half
///   the iterations so far (which a leak every k-th iteration would).
/// - Ambiguous, at the plan's end: a byte count rose, then stayed flat for between half
///   and all of the time it rose ([`Persistence::Unsure`]).
pub(crate) fn progress(
    m: &Measurement,
    sites: &[Site],
    policy: &Policy,
    planned: usize,
) -> Progress {
    let Some(baseline) = m.series.baseline else {
        return Progress::Continue;
    };
    let samples = &m.series.iterations;
    let done = samples.len();
    let trends: Vec<(Resource, Trend)> = [
        (
            Resource::Heap,
            (|s| Some(s.heap_bytes)) as fn(&leakgate_reports::Sample) -> Option<u64>,
        ),
        (Resource::CHeap, |s| s.c_heap_bytes),
        (Resource::Disk, |s| s.disk_bytes),
    ]
    .into_iter()
    .filter_map(|(resource, value)| {
        let series: Vec<u64> = samples.iter().filter_map(value).collect();
        Some((resource, Trend::of(value(&baseline)?, &series)))
    })
    .collect();
    if done >= planned {
        return trends
            .iter()
            .find(|(r, t)| t.rises(tolerance(policy, *r)) && t.persistence() == Persistence::Unsure)
            .map_or(Progress::Continue, |(resource, t)| {
                let last = t.last_high.unwrap_or(0);
                Progress::Ambiguous(format!(
                    "{resource} rose until iteration {last} of {done}, then stayed flat: a late \
                     plateau, or growth in widening steps"
                ))
            });
    }
    let heap_tolerance = tolerance(policy, Resource::Heap);
    let heap_noise = trends.first().map_or(0, |(_, t)| t.noise) as i64;
    let accumulating = accumulating_sites(
        sites,
        Some(baseline),
        samples.last().copied(),
        heap_tolerance.saturating_add(heap_noise),
    );
    if let Some(site) = accumulating
        .iter()
        .find(|s| s.iterations as usize * 10 >= done * 9)
    {
        return Progress::Conclusive(format!(
            "leaking: a site kept blocks from {} of {done} iterations, {} in all",
            site.iterations,
            bytes(site.bytes as i64)
        ));
    }
    // Flat for half the run so far, and for twice as long as it rose: a buffer that
    // doubles looks flat for as long as it last rose, right before it doubles again.
    // A sawtooth whose floor still rises is not flat, whatever its highs say.
    let flat = trends.iter().all(|(_, t)| {
        !t.floor_still_rising()
            && match (t.first_high, t.last_high) {
                (Some(first), Some(last)) => {
                    let flat = done - 1 - last as usize;
                    flat * 2 >= done && flat >= 2 * (last - first) as usize
                }
                _ => true,
            }
    });
    let last = samples.last().copied().unwrap_or(baseline);
    let counts_back = [
        (Resource::Fds, baseline.fds, last.fds),
        (Resource::Threads, baseline.threads, last.threads),
        (Resource::Files, baseline.files, last.files),
    ]
    .iter()
    .all(|&(r, base, now)| {
        now.unwrap_or(0) as i64 - base.unwrap_or(0) as i64 <= tolerance(policy, r)
    });
    let spanning = sites.iter().any(|s| {
        s.iterations >= 2 && (s.last_iteration - s.first_iteration + 1) as usize * 2 >= done
    });
    if flat && counts_back && !spanning {
        return Progress::Conclusive(format!(
            "clean: flat for the last half of {done} iterations, with nothing accumulating"
        ));
    }
    Progress::Continue
}

/// Judges a finished measurement.
fn analyze(m: &Measurement, policy: &Policy) -> Analysis {
    let mut findings = findings(m, policy);
    for finding in &mut findings {
        finding.expected = policy.expect.contains(&finding.resource);
        // An expected leak is the scenario's point: no rule sets it aside.
        if !finding.expected {
            finding.suppressed = policy
                .suppressions
                .iter()
                .find(|rule| rule.matches(finding))
                .map(|rule| rule.describe());
        }
    }
    let mut notes: Vec<String> = policy
        .expect
        .iter()
        .filter(|r| !measured(m, **r))
        .map(|r| format!("expect_leak({r}) ignored: {r} was not measured in this run"))
        .collect();
    if findings.iter().any(|f| f.resource == Resource::CHeap) && !m.c_heap_survivors.recorded {
        notes.push(
            "C heap sites were not recorded: they need the `jemalloc` feature, \
             LEAKGATE_SITES=exact and LEAKGATE_C_SITES=on"
                .to_owned(),
        );
    }
    let missing: Vec<Resource> = policy
        .expect
        .iter()
        .copied()
        .filter(|r| measured(m, *r) && !findings.iter().any(|f| f.resource == *r))
        .collect();
    let unexpected = findings
        .iter()
        .find(|f| !f.expected && f.suppressed.is_none());
    let recorded = SitesRecorded {
        heap: m.survivors.recorded,
        c_heap: m.c_heap_survivors.recorded,
    };
    let misattributed = misattribution(&findings, policy, recorded);
    let (verdict, summary) = if let Some(error) = &m.iteration_error {
        let phase = if error.phase == "warmup" {
            "warm-up iteration"
        } else {
            "iteration"
        };
        (
            Verdict::Fail,
            format!("{phase} {} failed: {}", error.iteration, error.message),
        )
    } else if let Some(finding) = unexpected {
        (Verdict::Fail, finding.message.clone())
    } else if let Some(resource) = missing.first() {
        (
            Verdict::Fail,
            format!("expected a {resource} leak, but none was found"),
        )
    } else if let Some(message) = misattributed {
        (Verdict::Fail, message)
    } else if let Some(finding) = findings.iter().find(|f| f.expected) {
        (
            Verdict::Pass,
            format!("expected leak found: {}", finding.message),
        )
    } else {
        let suppressed = findings.iter().filter(|f| f.suppressed.is_some()).count();
        let summary = match suppressed {
            0 => clean_summary(m),
            n => format!(
                "{}; {n} finding{} suppressed",
                clean_summary(m),
                if n == 1 { "" } else { "s" }
            ),
        };
        (Verdict::Pass, summary)
    };
    Analysis {
        verdict,
        summary,
        findings,
        notes,
        scaling: fit_scaling(&m.scaling, policy.expect_growth),
        statistics: statistics(m, policy),
    }
}

/// The trend of each byte series that was measured (heap, C heap, disk), with what it
/// retained and may retain, so a report shows how close a pass came to failing.
fn statistics(m: &Measurement, policy: &Policy) -> Vec<TrendStatistics> {
    let series: [(Resource, SampleValue); 3] = [
        (Resource::Heap, |s| Some(s.heap_bytes)),
        (Resource::CHeap, |s| s.c_heap_bytes),
        (Resource::Disk, |s| s.disk_bytes),
    ];
    series
        .into_iter()
        .filter_map(|(resource, value)| {
            let baseline = value(&m.series.baseline?)?;
            let end = value(&m.series.end?)?;
            let points: Vec<u64> = m.series.iterations.iter().filter_map(value).collect();
            if points.is_empty() {
                return None;
            }
            let trend = Trend::of(baseline, &points);
            let tolerance = tolerance(policy, resource);
            let persistence = match trend.persistence() {
                Persistence::Growing => "growing",
                Persistence::Plateau => "plateau",
                Persistence::Unsure => "unsure",
            };
            let mut statistics =
                TrendStatistics::new(resource, end as i64 - baseline as i64, tolerance);
            statistics.slope = trend.slope;
            statistics.noise = trend.noise;
            statistics.new_highs = trend.new_highs;
            statistics.first_high = trend.first_high;
            statistics.last_high = trend.last_high;
            statistics.floor_rise = trend.floor_rise;
            statistics.persistence = persistence.to_owned();
            statistics.growth = trend.is_growth(tolerance);
            Some(statistics)
        })
        .collect()
}

/// Which heaps' sites a run recorded.
#[derive(Clone, Copy)]
struct SitesRecorded {
    heap: bool,
    c_heap: bool,
}

/// Why the first declared leak is not where `expect_site` says, if it is not: for the
/// heap and the peak, some frame of the top site must name it (inlining moves the first
/// frame between debug and release builds); for the rest, the first leaked item.
/// Nothing is checked where no sites were recorded (`LEAKGATE_SITES=off`,
/// `LEAKGATE_C_SITES=off`).
fn misattribution(
    findings: &[Finding],
    policy: &Policy,
    recorded: SitesRecorded,
) -> Option<String> {
    let wanted = policy.expect_site.as_deref()?;
    let first = *policy.expect.first()?;
    let finding = findings.iter().find(|f| f.resource == first)?;
    let top = match finding.resource {
        // Nothing names where disk bytes came from: there is nothing to check.
        Resource::Disk => return None,
        Resource::Heap | Resource::Peak if !recorded.heap => return None,
        Resource::CHeap if !recorded.c_heap => return None,
        Resource::Heap | Resource::Peak | Resource::CHeap => {
            let frames = finding.sites.first().map_or(&[][..], |s| &s.frames[..]);
            if frames.iter().any(|f| f.function.contains(wanted)) {
                return None;
            }
            frames.first().map(|f| f.function.as_str())
        }
        _ => finding.leaked.first().map(String::as_str),
    };
    let found = top.unwrap_or("nothing named");
    (!found.contains(wanted)).then(|| {
        format!(
            "expected the {} leak's top site in {wanted}, found {found}",
            finding.resource
        )
    })
}

/// Why a pinned crash is not where `expect_site` says, if it is not: some frame of the
/// faulting thread's user frames (function or file) must name it, since inlining and
/// optimisation move the innermost frame between builds; a panic, which has no fault
/// stack, must name it in its message (which carries the panic's location).
fn crash_misattribution(crash: &Crash, policy: &Policy) -> Option<String> {
    let wanted = policy.expect_site.as_deref()?;
    let in_stack = crash.stack.iter().any(|f| {
        f.function.contains(wanted) || f.file.as_deref().is_some_and(|file| file.contains(wanted))
    });
    let in_panic = crash.cause == CrashCause::Panic
        && crash.message.as_deref().is_some_and(|m| m.contains(wanted));
    if in_stack || in_panic {
        return None;
    }
    let found = crate::crash_stack::recursion(&crash.stack)
        .or_else(|| crash.stack.first().map(|f| f.function.as_str()))
        .or(crash
            .message
            .as_deref()
            .filter(|_| crash.cause == CrashCause::Panic))
        .unwrap_or("nothing named (no stack was captured)");
    Some(format!("expected the crash in {wanted}, found {found}"))
}

/// Every leak the measurement shows, expected or not.
fn findings(m: &Measurement, policy: &Policy) -> Vec<Finding> {
    [
        heap_finding(m, policy),
        c_heap_finding(m, policy),
        count_finding(m, policy, Resource::Fds, |s| s.fds, &m.leaked.fds),
        count_finding(
            m,
            policy,
            Resource::Threads,
            |s| s.threads,
            &m.leaked.threads,
        ),
        count_finding(m, policy, Resource::Files, |s| s.files, &m.leaked.files),
        growth_finding(m, policy, Resource::Disk, |s| s.disk_bytes),
        peak_finding(m, policy),
        scaling_finding(m, policy),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Whether everything has come back far enough that settling may stop: no finding would
/// be made from what was measured so far.
pub(crate) fn settled(m: &Measurement, policy: &Policy) -> bool {
    // Peaks and scaling are history: waiting cannot change them.
    findings(m, policy)
        .iter()
        .all(|f| f.resource == Resource::Peak)
}

/// Whether the heap alone has come back.
pub(crate) fn heap_settled(m: &Measurement, policy: &Policy) -> bool {
    heap_finding(m, policy).is_none()
}

/// Whether this run measured `resource` at all.
fn measured(m: &Measurement, resource: Resource) -> bool {
    let Some(baseline) = m.series.baseline else {
        return true; // Nothing was measured; the missing leak is then what fails.
    };
    match resource {
        Resource::CHeap => baseline.c_heap_bytes.is_some(),
        Resource::Fds => baseline.fds.is_some(),
        Resource::Threads => baseline.threads.is_some(),
        _ => true,
    }
}

fn retained(m: &Measurement) -> Option<i64> {
    let (baseline, end) = (m.series.baseline?, m.series.end?);
    Some(end.heap_bytes as i64 - baseline.heap_bytes as i64)
}

fn clean_summary(m: &Measurement) -> String {
    match retained(m) {
        Some(r) if r > 0 => format!(
            "no leak: heap {} above baseline after settling, not growing",
            bytes(r)
        ),
        Some(_) => "no leak: heap back at baseline".to_owned(),
        None => "no leak measured: the scenario did not reach its end sample".to_owned(),
    }
}

fn tolerance(policy: &Policy, resource: Resource) -> i64 {
    i64::try_from(policy.tolerance(resource)).unwrap_or(i64::MAX)
}

/// A byte count that is above its baseline after settling and was still growing.
fn growth_finding(
    m: &Measurement,
    policy: &Policy,
    resource: Resource,
    value: SampleValue,
) -> Option<Finding> {
    let baseline = value(&m.series.baseline?)?;
    let retained = value(&m.series.end?)? as i64 - baseline as i64;
    if retained <= tolerance(policy, resource) {
        return None;
    }
    let series: Vec<u64> = m.series.iterations.iter().filter_map(value).collect();
    if !Trend::of(baseline, &series).is_growth(tolerance(policy, resource)) {
        return None;
    }
    let measured = series.len() as u32;
    let mut finding = Finding::new(resource, retained, measured);
    let what = match resource {
        Resource::CHeap => "C heap",
        Resource::Disk => "disk usage",
        _ => resource.name(),
    };
    finding.message = format!(
        "{what} grew {} over {measured} measured iterations ({}/iteration)",
        bytes(retained),
        bytes(finding.per_iteration.round() as i64),
    );
    Some(finding)
}

/// A count of named things (descriptors, threads, paths) above its baseline after settling.
fn count_finding(
    m: &Measurement,
    policy: &Policy,
    resource: Resource,
    value: SampleValue,
    leaked: &[String],
) -> Option<Finding> {
    let baseline = value(&m.series.baseline?)?;
    let grown = value(&m.series.end?)? as i64 - baseline as i64;
    if grown <= tolerance(policy, resource) {
        return None;
    }
    let mut finding = Finding::new(resource, grown, m.series.iterations.len() as u32);
    finding.leaked = leaked.to_vec();
    let (one, many) = match resource {
        Resource::Fds => ("file descriptor left open", "file descriptors left open"),
        Resource::Threads => ("thread still running", "threads still running"),
        _ => ("path left behind", "paths left behind"),
    };
    let what = if grown == 1 { one } else { many };
    let mut named = leaked
        .iter()
        .take(NAMED_IN_MESSAGE)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if leaked.len() > NAMED_IN_MESSAGE {
        named += &format!(" and {} more", leaked.len() - NAMED_IN_MESSAGE);
    }
    finding.message = format!("{grown} {what} after settling: {named}");
    Some(finding)
}

/// The C heap is jemalloc's total less the Rust heap; jemalloc counts whole size classes
/// where leakgate counts requested bytes, so Rust growth leaves up to as much again in the
/// difference. Only growth beyond that slack is the C heap's own.
fn c_heap_finding(m: &Measurement, policy: &Policy) -> Option<Finding> {
    let mut finding = growth_finding(m, policy, Resource::CHeap, |s| s.c_heap_bytes)?;
    let rust_growth = retained(m).unwrap_or(0).max(0);
    if finding.growth <= rust_growth {
        return None;
    }
    let survivors = &m.c_heap_survivors;
    if survivors.recorded {
        finding.leaking_iterations = survivors.iterations;
        finding.sites = survivors.sites.iter().take(MAX_SITES).cloned().collect();
        if let Some(top) = finding.sites.first().and_then(|s| s.frames.first()) {
            finding.message += &format!(
                "; {} of {} iterations left C memory behind, most at {}",
                survivors.iterations, finding.measured_iterations, top.function
            );
        }
    }
    Some(finding)
}

/// Whether the C heap grew enough for a finding: its sites are then worth symbolizing.
pub(crate) fn c_heap_grew(m: &Measurement, policy: &Policy) -> bool {
    c_heap_finding(m, policy).is_some()
}

/// The sites whose survivors accumulate ([`accumulates`]) beyond `tolerance`, when the
/// process's live block count grew by at least half their blocks from `baseline` to
/// `now`. The count is what tells a leak under churn (blocks replaced one for one, of
/// random sizes: the bytes swing, the count does not) from a cache that was full before
/// the baseline and evicts one old entry for each new one (the count stays flat).
fn accumulating_sites(
    sites: &[Site],
    baseline: Option<leakgate_reports::Sample>,
    now: Option<leakgate_reports::Sample>,
    tolerance: i64,
) -> Vec<&Site> {
    let (Some(baseline), Some(now)) = (baseline, now) else {
        return Vec::new();
    };
    let gained = now.heap_blocks as i64 - baseline.heap_blocks as i64;
    let accumulating: Vec<&Site> = sites
        .iter()
        .filter(|s| accumulates(s) && s.bytes as i64 > tolerance)
        .collect();
    let blocks: i64 = accumulating.iter().map(|s| s.blocks as i64).sum();
    if gained * 2 >= blocks {
        accumulating
    } else {
        Vec::new()
    }
}

/// The heap leaks when its total grew to the end of the run (see [`Trend`]), or when a
/// site's survivors accumulate over the whole run ([`accumulating_sites`]) beyond the
/// tolerance, even while other sites' churn hides that growth in the total.
fn heap_finding(m: &Measurement, policy: &Policy) -> Option<Finding> {
    let tolerance = tolerance(policy, Resource::Heap);
    let accumulating = accumulating_sites(
        &m.survivors.sites,
        m.series.baseline,
        m.series.end,
        tolerance,
    );
    let (mut finding, hidden) =
        match growth_finding(m, policy, Resource::Heap, |s| Some(s.heap_bytes)) {
            Some(finding) => (finding, false),
            None if !accumulating.is_empty() => {
                let held: u64 = accumulating.iter().map(|s| s.bytes).sum();
                let measured = m.series.iterations.len() as u32;
                (Finding::new(Resource::Heap, held as i64, measured), true)
            }
            None => return None,
        };
    let (retained, measured) = (finding.growth, finding.measured_iterations);
    finding.leaking_iterations = m.survivors.iterations;
    finding.sites = m.survivors.sites.iter().take(MAX_SITES).cloned().collect();
    finding.held_after_teardown = m
        .survivors_after_teardown
        .as_ref()
        .filter(|s| s.recorded)
        .map(|s| s.bytes as i64);
    let behind = if m.survivors.recorded {
        format!(
            "; {} of {measured} iterations left memory behind",
            m.survivors.iterations
        )
    } else {
        String::new()
    };
    let lifecycle = match finding.held_after_teardown {
        Some(held) if held > 0 => format!("; {} still held after teardown", bytes(held)),
        Some(_) => "; freed at teardown: it grows while the state lives".to_owned(),
        None => String::new(),
    };
    finding.message = if hidden {
        let top = accumulating[0];
        format!(
            "heap: {} held by {} site{} whose survivors come from {} of {measured} iterations, \
             spread over the whole run ({}/iteration), though churn elsewhere hid it in the \
             total{lifecycle}",
            bytes(retained),
            accumulating.len(),
            if accumulating.len() == 1 { "" } else { "s" },
            top.iterations,
            bytes(finding.per_iteration.round() as i64),
        )
    } else {
        format!(
            "heap grew {} over {measured} measured iterations ({}/iteration{behind}){lifecycle}",
            bytes(retained),
            bytes(finding.per_iteration.round() as i64),
        )
    };
    Some(finding)
}

fn peak_finding(m: &Measurement, policy: &Policy) -> Option<Finding> {
    let budget = policy.peak_budget?;
    let baseline = m.series.baseline?.heap_bytes;
    // The measured iterations only: settling runs the verdict itself, which allocates
    // (as do the adaptive checks, whose peaks stay in the samples they follow).
    let peak = m.series.iterations.iter().map(|s| s.heap_peak).max()?;
    let above = peak.saturating_sub(baseline);
    if above <= budget {
        return None;
    }
    let mut finding = Finding::new(
        Resource::Peak,
        above as i64,
        m.series.iterations.len() as u32,
    );
    finding.sites = m.peak_sites.clone();
    finding.message = format!(
        "heap peaked {} above baseline, over its budget of {}",
        bytes(above as i64),
        bytes(budget as i64)
    );
    Some(finding)
}

/// Fits peak memory against input size: an exponent on logarithms (the growth class)
/// and a line (bytes per unit). `None` with fewer than two sizes.
pub(crate) fn fit_scaling(points: &[ScalePoint], expected: Option<Growth>) -> Option<Scaling> {
    if points.len() < 2 {
        return None;
    }
    let least_squares = |xy: &[(f64, f64)]| {
        let n = xy.len() as f64;
        let (mx, my) = (
            xy.iter().map(|p| p.0).sum::<f64>() / n,
            xy.iter().map(|p| p.1).sum::<f64>() / n,
        );
        let covariance: f64 = xy.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
        let variance: f64 = xy.iter().map(|(x, _)| (x - mx).powi(2)).sum();
        let slope = if variance > 0.0 {
            covariance / variance
        } else {
            0.0
        };
        (slope, my - slope * mx)
    };
    // Peaks below the noise floor (the counters' flush granularity) read as the floor,
    // so jitter in a small constant peak cannot fit as growth.
    let logs: Vec<(f64, f64)> = points
        .iter()
        .filter(|p| p.size > 0)
        .map(|p| {
            (
                (p.size as f64).ln(),
                (p.peak_bytes.max(PEAK_NOISE) as f64).ln(),
            )
        })
        .collect();
    let (exponent, _) = least_squares(&logs);
    let line: Vec<(f64, f64)> = points
        .iter()
        .map(|p| (p.size as f64, p.peak_bytes as f64))
        .collect();
    let (per_unit, intercept) = least_squares(&line);
    Some(Scaling::new(
        points.to_vec(),
        exponent,
        per_unit,
        intercept,
        Growth::of_exponent(exponent).name(),
        expected.map(Growth::name),
    ))
}

/// A peak that grows with input size faster than the scenario expects.
fn scaling_finding(m: &Measurement, policy: &Policy) -> Option<Finding> {
    let expected = policy.expect_growth?;
    let fit = fit_scaling(&m.scaling, Some(expected))?;
    let measured = Growth::of_exponent(fit.peak_exponent);
    let (first, last) = (fit.points.first()?, fit.points.last()?);
    if measured <= expected || last.peak_bytes < first.peak_bytes + PEAK_NOISE {
        return None;
    }
    let mut finding = Finding::new(
        Resource::Peak,
        last.peak_bytes as i64 - first.peak_bytes as i64,
        m.series.iterations.len() as u32,
    );
    finding.sites = m.peak_sites.clone();
    finding.message = format!(
        "peak grows {} with input size, expected {}: {} at size {}, {} at size {} (≈ {} per unit, exponent {:.2})",
        measured.name(),
        expected.name(),
        bytes(first.peak_bytes as i64),
        first.size,
        bytes(last.peak_bytes as i64),
        last.size,
        bytes(fit.peak_bytes_per_unit.round() as i64),
        fit.peak_exponent,
    );
    Some(finding)
}

/// Ranks sites for attribution: sites whose survivors accumulate over the run first,
/// then those whose survivors span at least half the measured iterations, then by
/// bytes. `site` finds the site in each item.
pub(crate) fn rank_sites<T>(items: &mut [T], measured_iterations: u32, site: impl Fn(&T) -> &Site) {
    let key = |item: &T| {
        let s = site(item);
        let spans_run = (s.last_iteration - s.first_iteration + 1) * 2 >= measured_iterations;
        (
            std::cmp::Reverse(accumulates(s)),
            std::cmp::Reverse(spans_run),
            std::cmp::Reverse(s.bytes),
        )
    };
    items.sort_by_key(key);
}

/// How a per-iteration series moves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Trend {
    /// Theil–Sen slope: the median of the slopes between all pairs of points.
    pub slope: f64,
    /// How much the series moves without growing: twice its median drawdown below the
    /// running high (0 for counts that only grow, in steps or not).
    pub noise: u64,
    /// Iterations that rose above every earlier value (and the baseline) by more than
    /// the noise.
    pub new_highs: u32,
    /// The first and the last of those iterations.
    pub first_high: Option<u32>,
    pub last_high: Option<u32>,
    /// Points in the series.
    pub len: u32,
    /// How far the lowest value of the last quarter of the series lies above the lowest
    /// of the first quarter. A sawtooth (a WAL truncated by checkpoints, a memtable
    /// flushed when full) keeps returning to its floor; a leak raises the floor.
    pub floor_rise: i64,
    /// How far the lowest value of each of the last three quarters of the series lies
    /// above that of the quarter before it, and that of the last eighth above the
    /// eighth before it.
    pub floor_steps: [i64; 4],
}

/// Whether a series' growth lasts to the end of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Persistence {
    /// Still setting new highs: flat at the end for less than a quarter as long as it
    /// rose.
    Growing,
    /// Rose, then stayed flat for at least as long as it had risen: a plateau.
    Plateau,
    /// In between: a late plateau, or growth in widening steps (a doubling buffer).
    /// More iterations tell them apart; without them, it counts as growth when flat for
    /// less than three quarters of its rise.
    Unsure,
}

impl Trend {
    pub(crate) fn of(baseline: u64, series: &[u64]) -> Self {
        let noise = noise(baseline, series);
        let mut high = baseline;
        let (mut new_highs, mut first_high, mut last_high) = (0, None, None);
        for (i, &value) in series.iter().enumerate() {
            if value > high.saturating_add(noise) {
                new_highs += 1;
                first_high.get_or_insert(i as u32);
                last_high = Some(i as u32);
            }
            high = high.max(value);
        }
        let quarter = series.len().div_ceil(4);
        let floor = |part: &[u64]| part.iter().copied().min().unwrap_or(0) as i64;
        let part_floor = |k: usize, parts: usize| {
            floor(&series[k * series.len() / parts..(k + 1) * series.len() / parts])
        };
        let floor_steps = if series.len() >= MIN_FLOOR_POINTS {
            let [a, b, c] = [1, 2, 3].map(|k| part_floor(k, 4) - part_floor(k - 1, 4));
            [a, b, c, part_floor(7, 8) - part_floor(6, 8)]
        } else {
            [0; 4]
        };
        Self {
            floor_steps,
            slope: theil_sen(series),
            noise,
            new_highs,
            first_high,
            last_high,
            len: series.len() as u32,
            floor_rise: floor(&series[series.len() - quarter..]) - floor(&series[..quarter]),
        }
    }

    /// A rising sawtooth (a directory that compactions trim but never back to where it
    /// was): each tooth rises less than the series swings, so no value clears the running
    /// high by the noise, but the floor rose from each quarter of the run to the next by
    /// more than half the noise, and still did in the last eighth (a plateau reached in
    /// the third quarter has level floors there).
    pub(crate) fn floor_still_rising(&self) -> bool {
        let step = (self.noise / 2).max(1) as i64;
        self.noise > 0 && self.floor_steps.iter().all(|&s| s > step)
    }

    /// Whether the series still grew at its end.
    pub(crate) fn persistence(&self) -> Persistence {
        if self.floor_still_rising() {
            return Persistence::Growing;
        }
        let (Some(first), Some(last)) = (self.first_high, self.last_high) else {
            return Persistence::Plateau;
        };
        let (rise, flat) = (last - first, self.len - 1 - last);
        if flat * 4 < rise {
            Persistence::Growing
        } else if flat >= rise {
            Persistence::Plateau
        } else {
            Persistence::Unsure
        }
    }

    /// Rising: a positive slope, new highs above the noise in at least two iterations
    /// (or a floor still rising under the swings), and a floor that rose by more than
    /// `tolerance`, whether or not it lasts.
    pub(crate) fn rises(&self, tolerance: i64) -> bool {
        self.slope > 0.0
            && (self.new_highs >= 2 || self.floor_still_rising())
            && self.floor_rise > tolerance
    }

    /// Growth: rising, and rising to the end (an unsure ending counts when the series
    /// stayed flat for less than three quarters of its rise).
    pub(crate) fn is_growth(&self, tolerance: i64) -> bool {
        if !self.rises(tolerance) {
            return false;
        }
        match self.persistence() {
            Persistence::Growing => true,
            Persistence::Plateau => false,
            Persistence::Unsure => {
                let (first, last) = (self.first_high.unwrap_or(0), self.last_high.unwrap_or(0));
                (self.len - 1 - last) * 4 < (last - first) * 3
            }
        }
    }
}

/// Points a series needs before the floors of its quarters say anything.
const MIN_FLOOR_POINTS: usize = 32;

/// Twice the median drawdown: how far, typically, the series lies below its running
/// high. Zero for a count that only grows (in steps or not) and for one that dips only
/// now and then; the size of the swings for churn.
fn noise(baseline: u64, series: &[u64]) -> u64 {
    let mut high = baseline;
    let mut drawdowns: Vec<u64> = series
        .iter()
        .map(|&value| {
            high = high.max(value);
            high - value
        })
        .collect();
    if drawdowns.is_empty() {
        return 0;
    }
    let middle = drawdowns.len() / 2;
    drawdowns.select_nth_unstable(middle).1.saturating_mul(2)
}

/// Whether a site's survivors accumulate over the whole run, as a leak's do: they came
/// from at least four iterations, from every quarter of the run, and no quarter holds
/// more than twice as many leaking iterations as another. A bounded cache's survivors
/// come from its last quarter only (churn); a cache that filled at the start and
/// stopped, from its first.
pub(crate) fn accumulates(site: &Site) -> bool {
    let quarters = &site.iterations_per_quarter;
    let (Some(&least), Some(&most)) = (quarters.iter().min(), quarters.iter().max()) else {
        return false;
    };
    quarters.len() == 4 && site.iterations >= 4 && least >= 1 && least * 2 >= most
}

fn theil_sen(series: &[u64]) -> f64 {
    let step = series.len().div_ceil(MAX_TREND_POINTS).max(1);
    let points: Vec<(f64, f64)> = series
        .iter()
        .enumerate()
        .step_by(step)
        .map(|(x, &y)| (x as f64, y as f64))
        .collect();
    let mut slopes: Vec<f64> = Vec::with_capacity(points.len() * points.len() / 2);
    for (i, &(x1, y1)) in points.iter().enumerate() {
        for &(x2, y2) in &points[i + 1..] {
            slopes.push((y2 - y1) / (x2 - x1));
        }
    }
    if slopes.is_empty() {
        return 0.0;
    }
    let middle = slopes.len() / 2;
    let (_, median, _) = slopes.select_nth_unstable_by(middle, f64::total_cmp);
    *median
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::Survivors;
    use leakgate_reports::{IterationError, Sample};

    const BASE: u64 = 100_000;

    fn policy() -> Policy {
        Policy {
            expect: Vec::new(),
            tolerances: Vec::new(),
            peak_budget: None,
            expect_site: None,
            expect_growth: None,
            expect_crash: None,
            suppressions: Vec::new(),
        }
    }

    /// A measurement whose heap follows `series` and ends at `end`.
    fn measured(series: &[u64], end: u64) -> Measurement {
        let sample = |bytes: u64| Sample::heap(bytes, 0, bytes, 0);
        let mut m = Measurement::default();
        m.series.baseline = Some(sample(BASE));
        m.series.iterations = series.iter().map(|&b| sample(b)).collect();
        m.series.end = Some(sample(end));
        m.measured_iterations = series.len() as u32;
        m
    }

    fn series(n: usize, mut f: impl FnMut(usize) -> u64) -> Vec<u64> {
        (0..n).map(|i| BASE + f(i)).collect()
    }

    fn heap_leak(series: &[u64]) -> bool {
        let m = measured(series, *series.last().unwrap());
        analyze(&m, &policy())
            .findings
            .iter()
            .any(|f| f.resource == Resource::Heap)
    }

    #[test]
    fn catches_sixteen_bytes_per_iteration_over_200() {
        let s = series(200, |i| 16 * (i as u64 + 1));
        let m = measured(&s, *s.last().unwrap());
        let analysis = analyze(&m, &policy());
        assert_eq!(analysis.verdict, Verdict::Fail);
        let finding = &analysis.findings[0];
        assert_eq!((finding.growth, finding.per_iteration), (3200, 16.0));
        assert!(
            analysis
                .summary
                .starts_with("heap grew 3.1 KiB over 200 measured iterations (16 B/iteration"),
            "{}",
            analysis.summary
        );
    }

    #[test]
    fn catches_a_leak_every_kth_iteration() {
        for k in [2, 7, 25, 50] {
            assert!(
                heap_leak(&series(200, |i| 64 * (i / k) as u64 + 64)),
                "k = {k}"
            );
        }
    }

    #[test]
    fn catches_a_vec_that_keeps_doubling() {
        let s = series(200, |i| 8 * (i + 6).next_power_of_two() as u64);
        assert!(heap_leak(&s));
    }

    #[test]
    fn passes_a_one_time_step_anywhere_in_the_run() {
        for at in [0, 50, 100, 150, 199] {
            assert!(
                !heap_leak(&series(200, |i| if i >= at { 4096 } else { 0 })),
                "step at {at}"
            );
        }
    }

    #[test]
    fn passes_a_cache_that_fills_early_then_evicts() {
        assert!(!heap_leak(&series(200, |i| 100 * (i.min(30) as u64 + 1))));
    }

    #[test]
    fn passes_a_buffer_that_grows_in_a_few_steps_then_stays() {
        assert!(!heap_leak(
            &series(200, |i| [512, 1024, 4096][(i / 15).min(2)])
        ));
    }

    #[test]
    fn passes_a_plateau_reached_a_fifth_or_half_way_through_the_run() {
        for at in [40, 100] {
            let s = series(200, |i| 160 * i.min(at) as u64);
            assert!(!heap_leak(&s), "plateau at {at}");
            let t = Trend::of(BASE, &s);
            assert_eq!(t.persistence(), Persistence::Plateau, "plateau at {at}");
        }
        // The same with noise on top: ±3 KiB of churn on a plateau 16 KiB up.
        let noisy = series(200, |i| {
            16_000 * i.min(50) as u64 / 50 + [0, 3000, 1000, 2500, 500][i % 5]
        });
        assert!(!heap_leak(&noisy));
    }

    #[test]
    fn catches_a_sawtooth_whose_floor_rises_less_per_tooth_than_it_swings() {
        // RocksDB's directory over a checkpoint loop: compactions trim it every few
        // iterations, each time to a little more than before (6 KiB an iteration under
        // 60-90 KiB swings), so no value clears the running high by the noise.
        let rising = series(100, |i| {
            290_000 + 6_000 * i as u64 + [0, 30_000, 60_000, 90_000][i % 4]
        });
        let t = Trend::of(BASE, &rising);
        assert!(t.last_high < Some(10), "{t:?}");
        assert_eq!(t.persistence(), Persistence::Growing);
        assert!(t.is_growth(0));
        // The same teeth on a level floor, and on a floor that stopped rising half way.
        let level = series(100, |i| 290_000 + [0, 30_000, 60_000, 90_000][i % 4]);
        assert!(!Trend::of(BASE, &level).is_growth(0));
        for stop in [50, 60, 70] {
            let stopped = series(100, |i| {
                290_000 + 6_000 * i.min(stop) as u64 + [0, 30_000, 60_000, 90_000][i % 4]
            });
            assert!(!Trend::of(BASE, &stopped).is_growth(0), "stopped at {stop}");
        }
        // A noisy plateau reached at 60% of the run, and a buffer that grows in three
        // steps under churn: flat at the end, whatever their quarters' floors did.
        let plateau = series(200, |i| {
            16_000 * i.min(120) as u64 / 120 + [0, 3000, 1000, 2500, 500][i % 5]
        });
        assert!(!Trend::of(BASE, &plateau).floor_still_rising());
        assert!(!heap_leak(&plateau));
        let steps = series(200, |i| {
            let grown = [20, 70, 110].iter().filter(|&&at| i >= at).count() as u64;
            65_536 * grown + (i as u64 * 7919 % 16) * 1000
        });
        assert!(!Trend::of(BASE, &steps).floor_still_rising());
    }

    #[test]
    fn catches_a_leak_that_starts_half_way_through_the_run() {
        let s = series(200, |i| 16 * i.saturating_sub(100) as u64);
        assert!(heap_leak(&s));
        assert_eq!(Trend::of(BASE, &s).persistence(), Persistence::Growing);
    }

    #[test]
    fn a_late_plateau_is_unsure_and_more_iterations_settle_it() {
        // Rose until 70% of the run: a plateau or a step-wise leak, cannot tell yet.
        let rising_until = |at: usize, len: usize| series(len, move |i| 64 * i.min(at) as u64);
        assert_eq!(
            Trend::of(BASE, &rising_until(140, 200)).persistence(),
            Persistence::Unsure
        );
        // Twice the iterations: flat for longer than it rose.
        assert_eq!(
            Trend::of(BASE, &rising_until(140, 400)).persistence(),
            Persistence::Plateau
        );
        assert!(!heap_leak(&rising_until(140, 400)));
    }

    /// A site with survivors from `iterations` distinct iterations, per quarter as given.
    fn site(bytes: u64, per_quarter: [u32; 4], function: &str) -> Site {
        let iterations = per_quarter.iter().sum();
        let mut site = Site::new(bytes, u64::from(iterations), iterations, 0, 299);
        site.iterations_per_quarter = per_quarter.to_vec();
        site.frames
            .push(leakgate_reports::Frame::new(function, None, None));
        site
    }

    #[test]
    fn catches_24_bytes_per_iteration_under_16_kib_of_churn_by_its_site() {
        // 32 buffers of random size replaced every iteration swing the total by ±16 KiB;
        // the leak adds 24 B per iteration, 7 KiB over the run, lost in the swings.
        let mut rng = fastrand::Rng::with_seed(7);
        let s = series(300, |i| {
            24 * i as u64 + 16_384 + rng.u64(0..32_768) - 16_384
        });
        let mut m = measured(&s, *s.last().unwrap() - 20_000);
        // One block more per iteration: the leak's; the churn replaces one for one.
        m.series.end.as_mut().unwrap().heap_blocks = 300;
        assert!(!heap_leak(&s), "the total alone does not show it");
        m.survivors = Survivors {
            recorded: true,
            bytes: 7200 + 131_072,
            blocks: 332,
            iterations: 300,
            sites: vec![
                site(131_072, [0, 0, 0, 32], "cache::replace"),
                site(7200, [75, 75, 75, 75], "engine::remember"),
            ],
        };
        rank_sites(&mut m.survivors.sites, 300, |s| s);
        let analysis = analyze(&m, &policy());
        assert_eq!(analysis.verdict, Verdict::Fail, "{}", analysis.summary);
        let finding = &analysis.findings[0];
        assert_eq!(finding.growth, 7200);
        assert_eq!(finding.sites[0].frames[0].function, "engine::remember");
        assert!(
            analysis.summary.starts_with(
                "heap: 7.0 KiB held by 1 site whose survivors come from 300 of 300 iterations"
            ),
            "{}",
            analysis.summary
        );
    }

    #[test]
    fn passes_a_cache_full_before_the_baseline_that_evicts_one_old_entry_per_new_one() {
        // 400 entries of 64 B filled in warm-up; each iteration adds one and evicts the
        // oldest, made before the baseline: the new entries survive from every
        // iteration, evenly, but the block count and the total stay flat.
        let s = series(200, |_| 0);
        let mut m = measured(&s, BASE);
        m.survivors.recorded = true;
        m.survivors.sites = vec![site(12_800, [50, 50, 50, 50], "cache::insert")];
        let analysis = analyze(&m, &policy());
        assert_eq!(analysis.verdict, Verdict::Pass, "{}", analysis.summary);
        // The same site with the block count grown by one an iteration is a leak.
        m.series.end.as_mut().unwrap().heap_blocks = 200;
        assert_eq!(analyze(&m, &policy()).verdict, Verdict::Fail);
    }

    #[test]
    fn survivors_only_from_the_end_or_the_start_are_not_accumulating() {
        // A bounded cache's churn: only recent entries survive.
        assert!(!accumulates(&site(65_536, [0, 0, 3, 29], "cache::insert")));
        // Filled in the first quarter, then kept: a warm cache, not a leak.
        assert!(!accumulates(&site(65_536, [60, 2, 1, 4], "cache::fill")));
        // A leak every tenth iteration: even across the quarters.
        assert!(accumulates(&site(1280, [5, 5, 5, 5], "engine::leak")));
        // Too little evidence to call.
        assert!(!accumulates(&site(64, [1, 0, 0, 1], "engine::once")));
        let mut peak_site = site(64, [1, 1, 1, 1], "peak::site");
        peak_site.iterations_per_quarter.clear();
        assert!(!accumulates(&peak_site), "no quarters recorded");
    }

    #[test]
    fn passes_deferred_frees_that_trail_the_iterations() {
        // Each iteration's buffer is freed two iterations later by a background thread:
        // the total swings by one or two buffers, and at the end only the last two
        // iterations' buffers are live; after settling, none.
        let s = series(200, |i| if i % 2 == 0 { 8192 } else { 4096 });
        assert!(!heap_leak(&s));
        let mut m = measured(&s, BASE + 8192);
        m.survivors.recorded = true;
        m.survivors.sites = vec![site(8192, [0, 0, 0, 2], "engine::hand_off")];
        assert_eq!(analyze(&m, &policy()).verdict, Verdict::Pass);
    }

    #[test]
    fn a_run_stops_early_only_on_conclusive_evidence() {
        let p = policy();
        // Flat for its whole first half: clean, stop.
        let flat = measured(&series(100, |_| 0), BASE);
        match progress(&flat, &[], &p, 200) {
            Progress::Conclusive(reason) => assert!(reason.starts_with("clean: "), "{reason}"),
            other => panic!("{other:?}"),
        }
        // Growing by 16 bytes an iteration: go on.
        let leak = measured(&series(100, |i| 16 * i as u64), BASE);
        assert_eq!(progress(&leak, &[], &p, 200), Progress::Continue);
        // A buffer that doubled at 27 and 59, looking flat since: go on, as flat as it
        // looks, it has not been flat for twice as long as it rose.
        let doubling = measured(
            &series(100, |i| 8 * (i + 6).next_power_of_two() as u64),
            BASE,
        );
        assert_eq!(progress(&doubling, &[], &p, 200), Progress::Continue);
        // A leak every 50th iteration: flat for the last half, but its site's survivors
        // span the run so far.
        let mut sparse = site(128, [1, 0, 1, 0], "engine::every_fiftieth");
        (sparse.first_iteration, sparse.last_iteration) = (0, 50);
        assert_eq!(progress(&flat, &[sparse], &p, 200), Progress::Continue);
        // A site with a block from every iteration so far, the block count grown with
        // it: leaking, stop.
        let mut leak = leak;
        leak.series.iterations.last_mut().unwrap().heap_blocks = 100;
        match progress(
            &leak,
            &[site(1600, [25, 25, 25, 25], "engine::leak")],
            &p,
            200,
        ) {
            Progress::Conclusive(reason) => assert!(
                reason.starts_with("leaking: a site kept blocks from 100 of 100"),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
        // A thread or descriptor still open: not clean yet.
        let mut thread_left = flat.clone();
        for sample in &mut thread_left.series.iterations {
            sample.threads = Some(3);
        }
        thread_left.series.baseline.as_mut().unwrap().threads = Some(2);
        assert_eq!(progress(&thread_left, &[], &p, 200), Progress::Continue);
    }

    #[test]
    fn an_unsure_ending_extends_the_run() {
        let p = policy();
        // Rose until 70% of the plan, then flat: extend.
        let late = measured(&series(200, |i| 64 * i.min(140) as u64), BASE + 64 * 140);
        match progress(&late, &[], &p, 200) {
            Progress::Ambiguous(reason) => assert!(
                reason.starts_with("heap rose until iteration 140 of 200"),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
        // Twice as long: a plateau, no more extension.
        let settled = measured(&series(400, |i| 64 * i.min(140) as u64), BASE + 64 * 140);
        assert_eq!(progress(&settled, &[], &p, 200), Progress::Continue);
        // Clearly growing or clearly flat at the planned end: nothing to extend.
        let leak = measured(&series(200, |i| 16 * i as u64), BASE + 3200);
        assert_eq!(progress(&leak, &[], &p, 200), Progress::Continue);
    }

    #[test]
    fn passes_a_sawtooth_that_keeps_returning_to_its_floor() {
        // A memtable flushed when full, or a WAL truncated by checkpoints.
        assert!(!heap_leak(&series(200, |i| 4096 * (i as u64 % 10))));
    }

    #[test]
    fn scaling_fits_the_growth_class_and_fails_worse_than_expected() {
        let point = |size: u64, peak: u64| ScalePoint::new(size, peak, 0);
        let linear = [
            point(1024, 1 << 20),
            point(2048, 2 << 20),
            point(4096, 4 << 20),
        ];
        let fit = fit_scaling(&linear, None).unwrap();
        assert!(
            (fit.peak_exponent - 1.0).abs() < 0.01,
            "{}",
            fit.peak_exponent
        );
        assert!((fit.peak_bytes_per_unit - 1024.0).abs() < 1.0);
        assert_eq!(fit.growth, "linear");
        let flat = [
            point(1024, 16_500),
            point(2048, 16_400),
            point(4096, 16_600),
        ];
        assert_eq!(fit_scaling(&flat, None).unwrap().growth, "constant");

        let mut m = measured(&series(10, |_| 0), BASE);
        m.scaling = linear.to_vec();
        let mut p = policy();
        p.expect_growth = Some(Growth::Constant);
        let analysis = analyze(&m, &p);
        assert_eq!(analysis.verdict, Verdict::Fail);
        assert!(
            analysis
                .summary
                .starts_with("peak grows linear with input size, expected constant"),
            "{}",
            analysis.summary
        );
        p.expect_growth = Some(Growth::Linear);
        assert_eq!(analyze(&m, &p).verdict, Verdict::Pass);
        m.scaling = flat.to_vec();
        p.expect_growth = Some(Growth::Constant);
        assert_eq!(analyze(&m, &p).verdict, Verdict::Pass);
    }

    #[test]
    fn passes_when_deferred_frees_bring_the_end_back_to_baseline() {
        let s = series(200, |i| 4096 * (i as u64 % 3 + i as u64 / 50));
        assert_eq!(
            analyze(&measured(&s, BASE), &policy()).verdict,
            Verdict::Pass
        );
    }

    #[test]
    fn tolerance_absorbs_small_growth() {
        let s = series(200, |i| 16 * (i as u64 + 1));
        let mut p = policy();
        p.tolerances.push((Resource::Heap, 4096));
        assert_eq!(
            analyze(&measured(&s, *s.last().unwrap()), &p).verdict,
            Verdict::Pass
        );
    }

    #[test]
    fn an_expected_leak_passes_only_when_found() {
        let mut p = policy();
        p.expect.push(Resource::Heap);
        let leaky = series(100, |i| 32 * (i as u64 + 1));
        let found = analyze(&measured(&leaky, *leaky.last().unwrap()), &p);
        assert_eq!(found.verdict, Verdict::Pass);
        assert!(found.findings[0].expected);
        let clean = series(100, |_| 0);
        let missing = analyze(&measured(&clean, BASE), &p);
        assert_eq!(missing.verdict, Verdict::Fail);
        assert_eq!(missing.summary, "expected a heap leak, but none was found");
    }

    #[test]
    fn an_expected_leak_must_be_attributed_to_the_named_function() {
        let mut p = policy();
        p.expect.push(Resource::Heap);
        p.expect_site = Some("leak_sixteen_bytes".to_owned());
        let leaky = series(100, |i| 16 * (i as u64 + 1));
        let mut m = measured(&leaky, *leaky.last().unwrap());
        let mut site = Site::new(1600, 100, 100, 0, 99);
        site.frames.push(leakgate_reports::Frame::new(
            "selftest::cache_insert",
            None,
            None,
        ));
        m.survivors.recorded = true;
        m.survivors.sites.push(site);
        let analysis = analyze(&m, &p);
        assert_eq!(analysis.verdict, Verdict::Fail);
        assert_eq!(
            analysis.summary,
            "expected the heap leak's top site in leak_sixteen_bytes, found selftest::cache_insert"
        );
        m.survivors.sites[0].frames[0].function = "selftest::leak_sixteen_bytes".to_owned();
        assert_eq!(analyze(&m, &p).verdict, Verdict::Pass);
    }

    #[test]
    fn expectations_of_unmeasured_resources_are_noted_not_judged() {
        let mut p = policy();
        p.expect.push(Resource::CHeap);
        let clean = series(10, |_| 0);
        let analysis = analyze(&measured(&clean, BASE), &p);
        assert_eq!(analysis.verdict, Verdict::Pass);
        assert!(
            analysis.notes[0].contains("c_heap was not measured"),
            "{:?}",
            analysis.notes
        );
    }

    #[test]
    fn leftover_descriptors_threads_and_paths_are_named_without_needing_a_trend() {
        let mut m = measured(&series(10, |_| 0), BASE);
        let counts = |s: &mut Sample, n: u64| {
            (s.fds, s.threads, s.files) = (Some(10 + n), Some(3 + n), Some(4 + n));
        };
        counts(m.series.baseline.as_mut().unwrap(), 0);
        counts(m.series.end.as_mut().unwrap(), 1);
        m.leaked.fds = vec!["fd 9 -> /tmp/x/segment-1".into()];
        m.leaked.threads = vec!["parked (tid 7)".into()];
        m.leaked.files = vec!["/tmp/x/db.tmp".into()];
        let analysis = analyze(&m, &policy());
        let kinds: Vec<Resource> = analysis.findings.iter().map(|f| f.resource).collect();
        assert_eq!(kinds, [Resource::Fds, Resource::Threads, Resource::Files]);
        assert_eq!(
            analysis.summary,
            "1 file descriptor left open after settling: fd 9 -> /tmp/x/segment-1"
        );
        assert_eq!(analysis.findings[2].leaked, ["/tmp/x/db.tmp"]);
        let mut p = policy();
        p.tolerances = vec![
            (Resource::Fds, 1),
            (Resource::Threads, 1),
            (Resource::Files, 1),
        ];
        assert_eq!(analyze(&m, &p).verdict, Verdict::Pass);
    }

    #[test]
    fn disk_and_c_heap_need_a_trend_like_the_heap() {
        let mut m = measured(&series(100, |_| 0), BASE);
        for (i, s) in m.series.iterations.iter_mut().enumerate() {
            s.disk_bytes = Some(4096 * (i as u64 % 10)); // a WAL truncated every 10
            s.c_heap_bytes = Some(1000 + 64 * i as u64); // malloc without free
        }
        m.series.baseline.as_mut().unwrap().disk_bytes = Some(0);
        m.series.baseline.as_mut().unwrap().c_heap_bytes = Some(1000);
        m.series.end.as_mut().unwrap().disk_bytes = Some(4096 * 9);
        m.series.end.as_mut().unwrap().c_heap_bytes = Some(1000 + 64 * 100);
        let kinds: Vec<Resource> = analyze(&m, &policy())
            .findings
            .iter()
            .map(|f| f.resource)
            .collect();
        assert_eq!(kinds, [Resource::CHeap]);
    }

    #[test]
    fn a_c_heap_leak_names_its_c_site_and_is_held_to_expect_site() {
        let mut m = measured(&series(100, |_| 0), BASE);
        for (i, s) in m.series.iterations.iter_mut().enumerate() {
            s.c_heap_bytes = Some(1000 + 224 * i as u64);
        }
        m.series.baseline.as_mut().unwrap().c_heap_bytes = Some(1000);
        m.series.end.as_mut().unwrap().c_heap_bytes = Some(1000 + 224 * 100);
        let mut kept = site(22_400, [25, 25, 25, 25], "selftest_c_cache_insert");
        kept.blocks = 100;
        m.c_heap_survivors = Survivors {
            recorded: true,
            bytes: 22_400,
            blocks: 100,
            iterations: 100,
            sites: vec![kept],
        };
        let mut p = policy();
        p.expect.push(Resource::CHeap);
        p.expect_site = Some("selftest_c_scratch_buffer".to_owned());
        let analysis = analyze(&m, &p);
        assert_eq!(analysis.verdict, Verdict::Fail);
        assert_eq!(
            analysis.summary,
            "expected the c_heap leak's top site in selftest_c_scratch_buffer, found \
             selftest_c_cache_insert"
        );
        let finding = &analysis.findings[0];
        assert!(
            finding.message.ends_with(
                "100 of 100 iterations left C memory behind, most at selftest_c_cache_insert"
            ),
            "{}",
            finding.message
        );
        assert!(analysis.notes.is_empty(), "{:?}", analysis.notes);
        p.expect_site = Some("selftest_c_cache_insert".to_owned());
        assert_eq!(analyze(&m, &p).verdict, Verdict::Pass);
        // Without C sites recorded there is nothing to hold the site to, and a note says so.
        m.c_heap_survivors = Survivors::default();
        let unrecorded = analyze(&m, &p);
        assert_eq!(unrecorded.verdict, Verdict::Pass);
        assert!(
            unrecorded.notes[0].contains("LEAKGATE_C_SITES"),
            "{:?}",
            unrecorded.notes
        );
    }

    #[test]
    fn an_iteration_error_fails_with_its_number_and_message() {
        let mut m = measured(&series(10, |_| 0), BASE);
        m.iteration_error = Some(IterationError::new("measure", 7, "disk full"));
        let analysis = analyze(&m, &policy());
        assert_eq!(
            (analysis.verdict, analysis.summary.as_str()),
            (Verdict::Fail, "iteration 7 failed: disk full")
        );
    }

    #[test]
    fn peak_budget_fails_a_spike_that_returns() {
        let mut m = measured(&series(10, |_| 0), BASE);
        m.series.iterations[4].heap_peak = BASE + (10 << 20);
        let mut p = policy();
        p.peak_budget = Some(1 << 20);
        let analysis = analyze(&m, &p);
        assert_eq!(analysis.verdict, Verdict::Fail);
        assert_eq!(analysis.findings[0].resource, Resource::Peak);
        p.peak_budget = Some(64 << 20);
        assert_eq!(analyze(&m, &p).verdict, Verdict::Pass);
    }

    #[test]
    fn lifecycle_says_whether_teardown_gave_the_memory_back() {
        let s = series(50, |i| 64 * (i as u64 + 1));
        let mut m = measured(&s, *s.last().unwrap());
        m.survivors_after_teardown = Some(Survivors {
            recorded: true,
            bytes: 3200,
            ..Survivors::default()
        });
        assert!(
            analyze(&m, &policy())
                .summary
                .ends_with("3.1 KiB still held after teardown")
        );
        m.survivors_after_teardown = Some(Survivors {
            recorded: true,
            ..Survivors::default()
        });
        assert!(
            analyze(&m, &policy())
                .summary
                .ends_with("grows while the state lives")
        );
    }

    #[test]
    fn sites_spanning_the_run_rank_before_bigger_recent_ones() {
        let mut sites = vec![
            Site::new(50_000, 10, 10, 190, 199), // a cache's recent entries
            Site::new(3_200, 200, 200, 0, 199),  // the leak
        ];
        rank_sites(&mut sites, 200, |s| s);
        assert_eq!(sites[0].bytes, 3_200);
    }

    fn crashed(crash: Crash) -> Outcome {
        Outcome::Crashed {
            crash,
            partial: Measurement::default(),
            memory_limit: None,
        }
    }

    #[test]
    fn a_crash_is_crashed_unless_pinned_with_its_cause() {
        let mut overflow = Crash::new(CrashCause::StackOverflow, "iteration 1", None);
        overflow.signal = Some("SIGABRT".into());
        overflow.stack = vec![leakgate_reports::Frame::new("engine::visit", None, None); 8];
        let unpinned = judge(&crashed(overflow.clone()), &policy());
        assert_eq!(
            (unpinned.verdict, unpinned.summary.as_str()),
            (
                Verdict::Crashed,
                "crashed: stack overflow (SIGABRT) in iteration 1; recursing through engine::visit"
            )
        );

        let mut pinned = policy();
        pinned.expect_crash = Some(CrashCause::StackOverflow);
        let found = judge(&crashed(overflow.clone()), &pinned);
        assert_eq!(found.verdict, Verdict::Pass, "{}", found.summary);
        assert!(
            found
                .summary
                .starts_with("expected crash found: crashed: stack overflow")
        );

        pinned.expect_site = Some("engine::visit".into());
        assert_eq!(
            judge(&crashed(overflow.clone()), &pinned).verdict,
            Verdict::Pass
        );
        pinned.expect_site = Some("engine::check".into());
        let elsewhere = judge(&crashed(overflow.clone()), &pinned);
        assert_eq!(
            (elsewhere.verdict, elsewhere.summary.as_str()),
            (
                Verdict::Fail,
                "expected the crash in engine::check, found engine::visit"
            )
        );

        // Another cause than the one pinned is a crash like any other.
        let panic = Crash::new(CrashCause::Panic, "setup", Some("boom (at a.rs:1)".into()));
        assert_eq!(judge(&crashed(panic), &pinned).verdict, Verdict::Crashed);
    }

    #[test]
    fn a_pinned_crash_that_does_not_happen_fails() {
        let mut p = policy();
        p.expect_crash = Some(CrashCause::Signal);
        let m = measured(&series(50, |_| 0), BASE);
        let analysis = judge(&Outcome::Finished(m), &p);
        assert_eq!(
            (analysis.verdict, analysis.summary.as_str()),
            (
                Verdict::Fail,
                "expected a crash (Signal), but the scenario finished"
            )
        );
    }

    #[test]
    fn the_memory_limit_is_a_peak_finding_judged_like_any_other() {
        let mut site = Site::new(64 << 20, 1, 1, 3, 3);
        site.frames.push(leakgate_reports::Frame::new(
            "engine::replay_whole_log",
            None,
            None,
        ));
        let stopped = Outcome::Crashed {
            crash: Crash::new(CrashCause::MemoryLimit, "iteration 3", None),
            partial: Measurement::default(),
            memory_limit: Some(MemoryLimitHit {
                limit: 32 << 20,
                heap: 64 << 20,
                sites: vec![site],
            }),
        };
        let unexpected = judge(&stopped, &policy());
        assert_eq!(unexpected.verdict, Verdict::Fail);
        assert_eq!(
            unexpected.summary,
            "heap reached 64.0 MiB above baseline in iteration 3, over the memory limit of 32.0 MiB: stopped"
        );
        assert_eq!(unexpected.findings[0].resource, Resource::Peak);

        let mut p = policy();
        p.expect = vec![Resource::Peak];
        p.expect_site = Some("replay_whole_log".into());
        assert_eq!(judge(&stopped, &p).verdict, Verdict::Pass);
        p.expect_site = Some("stream_log".into());
        let misattributed = judge(&stopped, &p);
        assert_eq!(
            (misattributed.verdict, misattributed.summary.as_str()),
            (
                Verdict::Fail,
                "expected the peak leak's top site in stream_log, found engine::replay_whole_log"
            )
        );
    }

    #[test]
    fn a_pinned_crash_is_checked_against_its_stack_or_panic_location() {
        let mut p = policy();
        p.expect_site = Some("mdb_page_search_root".to_owned());
        let mut fault = Crash::new(CrashCause::Signal, "iteration 0", None);
        fault.stack = ["mdb_page_search_root", "mdb_get", "engine::read"]
            .map(|f| leakgate_reports::Frame::new(f, None, None))
            .to_vec();
        assert_eq!(crash_misattribution(&fault, &p), None);
        fault.stack.remove(0);
        assert_eq!(
            crash_misattribution(&fault, &p).as_deref(),
            Some("expected the crash in mdb_page_search_root, found mdb_get")
        );

        p.expect_site = Some("btree_base.rs:35".to_owned());
        let message = "Invalid page type byte 0 (at src/tree_store/btree_base.rs:35)";
        let panic = Crash::new(CrashCause::Panic, "iteration 0", Some(message.to_owned()));
        assert_eq!(crash_misattribution(&panic, &p), None);
        let elsewhere = Crash::new(
            CrashCause::Panic,
            "iteration 0",
            Some("boom (at a.rs:1)".into()),
        );
        assert!(crash_misattribution(&elsewhere, &p).is_some());
    }
}
