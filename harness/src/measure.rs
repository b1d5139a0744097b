//! [`Measurement`]: what a scenario's run recorded, and the events that carry it from the
//! child process to the parent (JSON lines in a side-channel file, never stdout).

use std::fmt;
use std::path::PathBuf;

use leakgate_reports::{Crash, IterationError, Sample, ScalePoint, Series, Site};
use serde::{Deserialize, Serialize};

use crate::maps::Mapping;
use crate::probe::Leaked;

/// Version of the child-to-parent event protocol.
pub(crate) const PROTOCOL: u32 = 2;

/// Everything one run of a scenario recorded; the verdict is a function of this alone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Measurement {
    pub measured_iterations: u32,
    pub series: Series,
    /// Blocks from measured iterations still live at the end sample.
    pub survivors: Survivors,
    /// C heap blocks from measured iterations still live at the end sample (`recorded`
    /// only when jemalloc's hooks were installed).
    #[serde(default)]
    pub c_heap_survivors: Survivors,
    /// Blocks from measured iterations still live after teardown.
    pub survivors_after_teardown: Option<Survivors>,
    pub iteration_error: Option<IterationError>,
    /// Descriptors, threads and paths present at the end sample and not at the baseline.
    pub leaked: Leaked,
    /// The sites live at the heap's highest point, largest first (with a peak budget).
    pub peak_sites: Vec<Site>,
    /// Peak and retained heap per input size, for scenarios run with `.scaling(..)`.
    pub scaling: Vec<ScalePoint>,
    pub notes: Vec<String>,
}

/// How a scenario's run ended, as the runner recorded it: everything the judge
/// ([`crate::verdict::judge`]) looks at besides the policy.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// The session ran to its end.
    Finished(Measurement),
    /// The process ended before it reported a result.
    Crashed {
        crash: Crash,
        /// What it streamed before it ended: baseline and iteration samples.
        partial: Measurement,
        /// Set when the watchdog stopped it at the memory limit.
        memory_limit: Option<MemoryLimitHit>,
    },
}

impl Outcome {
    /// A run that could not start or be read, for `cause` `Harness`.
    pub(crate) fn harness_error(phase: &str, message: String) -> Self {
        Self::Crashed {
            crash: Crash::new(leakgate_reports::CrashCause::Harness, phase, Some(message)),
            partial: Measurement::default(),
            memory_limit: None,
        }
    }

    /// The measurement, complete or partial.
    pub(crate) fn measurement(&self) -> &Measurement {
        match self {
            Self::Finished(m) | Self::Crashed { partial: m, .. } => m,
        }
    }
}

/// The child's last word before the watchdog stopped it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct MemoryLimitHit {
    pub limit: u64,
    pub heap: u64,
    pub sites: Vec<Site>,
}

/// Surviving blocks, grouped by allocation site.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Survivors {
    /// Whether sites were recorded at all (`LEAKGATE_SITES=off` turns them off).
    pub recorded: bool,
    pub bytes: u64,
    pub blocks: u64,
    /// Distinct measured iterations the survivors came from.
    pub iterations: u32,
    /// The most telling sites, ranked by [`crate::verdict::rank_sites`], symbolized.
    pub sites: Vec<Site>,
}

/// Where a scenario is in its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Phase {
    Start,
    Setup,
    Warmup,
    Baseline,
    Measure,
    Settle,
    Teardown,
    Done,
}

/// A phase, with the iteration for warm-up and measured iterations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Position {
    pub phase: Phase,
    pub iteration: Option<u32>,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.phase, self.iteration) {
            (Phase::Measure, Some(i)) => write!(f, "iteration {i}"),
            (Phase::Warmup, Some(i)) => write!(f, "warm-up iteration {i}"),
            (phase, _) => {
                let name = serde_json::to_value(phase).ok();
                f.write_str(name.as_ref().and_then(|v| v.as_str()).unwrap_or("unknown"))
            }
        }
    }
}

/// One line of the side channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub(crate) enum Event {
    /// The first event: the protocol, and where the child's code is mapped, so the
    /// parent can symbolize fault addresses in the executable and in shared libraries.
    Hello {
        protocol: u32,
        #[serde(default)]
        mappings: Vec<Mapping>,
    },
    At(Position),
    Sample {
        sample: Sample,
    },
    ScratchDir {
        path: PathBuf,
    },
    Panic {
        message: String,
    },
    HarnessError {
        message: String,
    },
    Finished {
        measurement: Box<Measurement>,
    },
    /// The heap passed the memory limit; the sites at the peak, symbolized.
    MemoryLimit(MemoryLimitHit),
}
