//! Settings from the environment, for CI. Builder methods on `Scenario` cover the rest.
//!
//! | variable | values | default |
//! |---|---|---|
//! | `LEAKGATE_REPORT_DIR` | a directory for `report.json` | `target/leakgate/<run-id>/` |
//! | `LEAKGATE_TIMEOUT` | a duration, 1ms to 24h: `300`, `90s`, `1500ms`, `5m`, `1h` | `300s` per scenario |
//! | `LEAKGATE_SETTLE_TIMEOUT` | a duration | `1s` of retries for deferred frees |
//! | `LEAKGATE_KEEP_DIRS` | `never`, `on-failure`, `always` | `never` |
//! | `LEAKGATE_SITES` | `exact` (every block), `off` | `exact` |
//! | `LEAKGATE_C_SITES` | `on` (C heap sites through jemalloc's hooks; DWARF-unwound, so C allocations cost microseconds while measured), `off` | `on` |
//! | `LEAKGATE_MEMORY_LIMIT` | heap above baseline that stops a scenario: `512M`, `2G` | 4 × its peak budget |
//! | `LEAKGATE_ITERATIONS_SCALE` | a number in (0, 10000] multiplying measured iterations | `1` |
//! | `LEAKGATE_ADAPTIVE` | `on` (stop early when conclusive, extend when ambiguous), `off` (fixed length) | `on` |
//! | `LEAKGATE_SAVE_BASELINE` | a name: store each scenario's figures as that baseline | not saved |
//! | `LEAKGATE_SAVE_BASELINE_IN_CI` | `1`: save even when `CI=true` | not saved in CI |
//! | `LEAKGATE_BASELINE` | a name: compare each scenario with that baseline | no comparison |
//! | `LEAKGATE_BASELINE_DIR` | where baselines live | `target/leakgate/baselines` |
//! | `LEAKGATE_SUPPRESSIONS` | a file of suppression rules (see `Scenario::suppress`) | none |
//! | `LEAKGATE_BASELINE_NOISE` | a figure's allowed rise over its baseline, as a fraction in [0, 100] | `0.25` |

use std::path::PathBuf;
use std::time::Duration;

/// When to keep a scenario's scratch directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeepDirs {
    Never,
    OnFailure,
    Always,
}

/// Every variable leakgate reads (besides its own parent-to-child ones).
const VARIABLES: &[&str] = &[
    "LEAKGATE_REPORT_DIR",
    "LEAKGATE_TIMEOUT",
    "LEAKGATE_SETTLE_TIMEOUT",
    "LEAKGATE_KEEP_DIRS",
    "LEAKGATE_SITES",
    "LEAKGATE_C_SITES",
    "LEAKGATE_MEMORY_LIMIT",
    "LEAKGATE_ITERATIONS_SCALE",
    "LEAKGATE_ADAPTIVE",
    "LEAKGATE_SAVE_BASELINE",
    "LEAKGATE_SAVE_BASELINE_IN_CI",
    "LEAKGATE_BASELINE",
    "LEAKGATE_BASELINE_DIR",
    "LEAKGATE_BASELINE_NOISE",
    "LEAKGATE_SUPPRESSIONS",
];

/// The run's settings.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Config {
    pub report_dir: Option<PathBuf>,
    pub timeout: Duration,
    pub settle_timeout: Duration,
    pub keep_dirs: KeepDirs,
    pub sites: bool,
    /// Whether C heap blocks get sites too (needs `sites` and the `jemalloc` feature).
    pub c_sites: bool,
    pub iterations_scale: f64,
    /// Heap above baseline at which a scenario is stopped; `None`: four times its peak
    /// budget, or no limit without one.
    pub memory_limit: Option<u64>,
    /// Stop the measured phase early when the evidence is conclusive, and extend it when
    /// it is ambiguous (`LEAKGATE_ADAPTIVE`).
    pub adaptive: bool,
    /// `LEAKGATE_*` variables set but not known, each with the closest known name.
    pub unknown: Vec<(String, &'static str)>,
    /// The baseline to compare with (`LEAKGATE_BASELINE`).
    pub baseline: Option<String>,
    /// The baseline to save (`LEAKGATE_SAVE_BASELINE`), when saving is allowed here.
    pub save_baseline: Option<String>,
    /// Why a requested baseline is not saved (in CI without `LEAKGATE_SAVE_BASELINE_IN_CI`).
    pub save_refused: Option<String>,
    /// Where baselines live (`LEAKGATE_BASELINE_DIR`).
    pub baseline_dir: Option<PathBuf>,
    /// A figure's allowed relative rise over its baseline (`LEAKGATE_BASELINE_NOISE`).
    pub baseline_noise: f64,
    /// The suppressions file (`LEAKGATE_SUPPRESSIONS`).
    pub suppressions: Option<PathBuf>,
}

/// A variable with a value leakgate does not accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {variable}={value:?}: expected {expected}")]
pub struct ConfigError {
    variable: &'static str,
    value: String,
    expected: &'static str,
}

const DURATION: &str = "a duration from 1ms to 24h, such as 300, 90s, 1500ms or 5m";
/// The longest duration accepted: longer is a typo, and `Instant` arithmetic must not
/// overflow.
const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);
/// The largest iteration scale accepted.
const MAX_SCALE: f64 = 10_000.0;

impl Config {
    /// Reads the `LEAKGATE_*` variables of this process.
    pub(crate) fn from_env() -> Result<Self, ConfigError> {
        let mut config = Self::from_lookup(|name| {
            std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
        })?;
        config.unknown =
            unknown_variables(std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()));
        Ok(config)
    }

    /// Warnings about the environment, for stderr: misspelled variables.
    pub(crate) fn warnings(&self) -> impl Iterator<Item = String> + '_ {
        self.unknown
            .iter()
            .map(|(name, closest)| {
                format!("{name} is not a leakgate variable and is ignored; did you mean {closest}?")
            })
            .chain(self.save_refused.clone())
    }

    /// Reads the variables through `lookup` (the environment, or a test's table).
    pub(crate) fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let parse =
            |variable: &'static str, expected: &'static str, accept: &dyn Fn(&str) -> bool| {
                let value = lookup(variable)?;
                Some(if accept(value.trim()) {
                    Ok(value.trim().to_owned())
                } else {
                    Err(ConfigError {
                        variable,
                        value,
                        expected,
                    })
                })
            };
        let duration = |variable, default| -> Result<Duration, ConfigError> {
            match parse(variable, DURATION, &|v| parse_duration(v).is_some()) {
                Some(v) => Ok(parse_duration(&v?).unwrap_or(default)),
                None => Ok(default),
            }
        };
        let keep_dirs = match parse(
            "LEAKGATE_KEEP_DIRS",
            "one of never, on-failure, always",
            &|v| matches!(v, "never" | "on-failure" | "always"),
        ) {
            None => KeepDirs::Never,
            Some(v) => match v?.as_str() {
                "on-failure" => KeepDirs::OnFailure,
                "always" => KeepDirs::Always,
                _ => KeepDirs::Never,
            },
        };
        let sites = match parse("LEAKGATE_SITES", "one of exact, off", &|v| {
            matches!(v, "exact" | "off")
        }) {
            None => true,
            Some(v) => v? == "exact",
        };
        let c_sites = match parse("LEAKGATE_C_SITES", "one of on, off", &|v| {
            matches!(v, "on" | "off")
        }) {
            None => true,
            Some(v) => v? == "on",
        };
        let adaptive = match parse("LEAKGATE_ADAPTIVE", "one of on, off", &|v| {
            matches!(v, "on" | "off")
        }) {
            None => true,
            Some(v) => v? == "on",
        };
        let positive = |v: &str| v.parse::<f64>().is_ok_and(|x| x > 0.0 && x <= MAX_SCALE);
        let iterations_scale = match parse(
            "LEAKGATE_ITERATIONS_SCALE",
            "a number above 0 and at most 10000, such as 10 or 0.5",
            &positive,
        ) {
            None => 1.0,
            Some(v) => v?.parse().unwrap_or(1.0),
        };
        let report_dir = match parse("LEAKGATE_REPORT_DIR", "a directory path", &|v| {
            !v.is_empty()
        }) {
            None => None,
            Some(v) => Some(PathBuf::from(v?)),
        };
        let memory_limit = match parse(
            "LEAKGATE_MEMORY_LIMIT",
            "a size such as 512M, 2G or 1048576",
            &|v| parse_size(v).is_some(),
        ) {
            None => None,
            Some(v) => parse_size(&v?),
        };
        let name = |variable: &'static str| {
            parse(
                variable,
                "a baseline name of letters, digits, '.', '_' or '-', such as main",
                &|v| {
                    !v.is_empty()
                        && !v.starts_with('.')
                        && v.chars()
                            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                },
            )
            .transpose()
        };
        let baseline = name("LEAKGATE_BASELINE")?;
        let mut save_baseline = name("LEAKGATE_SAVE_BASELINE")?;
        // Baselines are written on purpose: in CI only when that is said twice.
        let in_ci = lookup("CI").is_some_and(|v| v == "true" || v == "1");
        let forced = lookup("LEAKGATE_SAVE_BASELINE_IN_CI").is_some_and(|v| v.trim() == "1");
        let save_refused = if in_ci && !forced {
            save_baseline.take().map(|name| {
                format!(
                    "baseline {name:?} not saved: CI=true, and baselines are saved in CI only \
                     with LEAKGATE_SAVE_BASELINE_IN_CI=1"
                )
            })
        } else {
            None
        };
        let baseline_dir = parse("LEAKGATE_BASELINE_DIR", "a directory path", &|v| {
            !v.is_empty()
        })
        .transpose()?
        .map(PathBuf::from);
        let baseline_noise = match parse(
            "LEAKGATE_BASELINE_NOISE",
            "a fraction from 0 to 100, such as 0.25 for 25 %",
            &|v| v.parse::<f64>().is_ok_and(|x| (0.0..=100.0).contains(&x)),
        ) {
            None => 0.25,
            Some(v) => v?.parse().unwrap_or(0.25),
        };
        let suppressions = parse("LEAKGATE_SUPPRESSIONS", "a file path", &|v| !v.is_empty())
            .transpose()?
            .map(PathBuf::from);
        Ok(Self {
            suppressions,
            baseline,
            save_baseline,
            save_refused,
            baseline_dir,
            baseline_noise,
            memory_limit,
            report_dir,
            timeout: duration("LEAKGATE_TIMEOUT", Duration::from_secs(300))?,
            settle_timeout: duration("LEAKGATE_SETTLE_TIMEOUT", Duration::from_secs(1))?,
            keep_dirs,
            sites,
            c_sites,
            iterations_scale,
            adaptive,
            unknown: Vec::new(),
        })
    }

    /// Measured iterations after scaling (at least 1 when any were asked for).
    pub(crate) fn scaled(&self, iterations: usize) -> usize {
        if iterations == 0 {
            return 0;
        }
        ((iterations as f64 * self.iterations_scale).round() as usize).max(1)
    }
}

/// The `LEAKGATE_*` names among `names` that leakgate does not read, each with the known
/// variable closest to it.
fn unknown_variables(names: impl Iterator<Item = String>) -> Vec<(String, &'static str)> {
    let internal = [crate::channel::CHANNEL_VAR, crate::channel::SCENARIO_VAR];
    let mut unknown: Vec<(String, &'static str)> = names
        .filter(|n| n.starts_with("LEAKGATE_"))
        .filter(|n| !VARIABLES.contains(&n.as_str()) && !internal.contains(&n.as_str()))
        .map(|name| {
            let closest = VARIABLES
                .iter()
                .copied()
                .max_by(|a, b| {
                    strsim::jaro_winkler(&name, a).total_cmp(&strsim::jaro_winkler(&name, b))
                })
                .unwrap_or(VARIABLES[0]);
            (name, closest)
        })
        .collect();
    unknown.sort();
    unknown
}

/// `1048576`, `64K`, `512M`, `2G` (also `KiB`, `MiB`, `GiB`); above zero.
fn parse_size(text: &str) -> Option<u64> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let shift = match unit {
        "" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        _ => return None,
    };
    number
        .parse::<u64>()
        .ok()?
        .checked_mul(1 << shift)
        .filter(|&n| n > 0)
}

/// `300` (seconds), `90s`, `1500ms`, `5m`.
fn parse_duration(text: &str) -> Option<Duration> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number.parse().ok()?;
    let duration = match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        _ => return None,
    };
    (!duration.is_zero() && duration <= MAX_DURATION).then_some(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn defaults_when_nothing_is_set() {
        let c = config(&[]).unwrap();
        assert_eq!(
            (c.timeout, c.keep_dirs, c.sites, c.iterations_scale),
            (Duration::from_secs(300), KeepDirs::Never, true, 1.0)
        );
    }

    #[test]
    fn parses_every_variable() {
        let c = config(&[
            ("LEAKGATE_TIMEOUT", "90s"),
            ("LEAKGATE_SETTLE_TIMEOUT", "250ms"),
            ("LEAKGATE_KEEP_DIRS", "on-failure"),
            ("LEAKGATE_SITES", "off"),
            ("LEAKGATE_ITERATIONS_SCALE", "2.5"),
            ("LEAKGATE_REPORT_DIR", "/tmp/r"),
            ("LEAKGATE_ADAPTIVE", "off"),
        ])
        .unwrap();
        assert!(!c.adaptive);
        assert!(config(&[]).unwrap().adaptive);
        assert!(config(&[("LEAKGATE_ADAPTIVE", "sometimes")]).is_err());
        assert_eq!(c.timeout, Duration::from_secs(90));
        assert_eq!(c.settle_timeout, Duration::from_millis(250));
        assert_eq!(c.keep_dirs, KeepDirs::OnFailure);
        assert!(!c.sites);
        assert_eq!(c.scaled(200), 500);
        assert_eq!(c.report_dir, Some(PathBuf::from("/tmp/r")));
        assert_eq!(
            config(&[("LEAKGATE_TIMEOUT", "5m")]).unwrap().timeout,
            Duration::from_secs(300)
        );
    }

    #[test]
    fn a_misspelled_variable_is_named_with_the_closest_real_one() {
        let names = [
            "LEAKGATE_TIMOUT",
            "LEAKGATE_KEEP_DIR",
            "LEAKGATE_TIMEOUT",
            "LEAKGATE_CHILD_CHANNEL",
            "PATH",
        ]
        .map(String::from);
        assert_eq!(
            unknown_variables(names.into_iter()),
            [
                ("LEAKGATE_KEEP_DIR".to_owned(), "LEAKGATE_KEEP_DIRS"),
                ("LEAKGATE_TIMOUT".to_owned(), "LEAKGATE_TIMEOUT"),
            ]
        );
    }

    #[test]
    fn a_bad_value_names_the_variable_and_what_is_accepted() {
        let err = config(&[("LEAKGATE_TIMEOUT", "soon")])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            r#"invalid LEAKGATE_TIMEOUT="soon": expected a duration from 1ms to 24h, such as 300, 90s, 1500ms or 5m"#
        );
        let err = config(&[("LEAKGATE_KEEP_DIRS", "yes")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("never, on-failure, always"), "{err}");
        assert!(config(&[("LEAKGATE_ITERATIONS_SCALE", "-1")]).is_err());
        assert!(config(&[("LEAKGATE_ITERATIONS_SCALE", "1e300")]).is_err());
        assert!(config(&[("LEAKGATE_TIMEOUT", "0")]).is_err());
        assert!(config(&[("LEAKGATE_SETTLE_TIMEOUT", "99999999999")]).is_err());
        assert!(config(&[("LEAKGATE_SITES", "sampled")]).is_err());
        assert!(config(&[("LEAKGATE_MEMORY_LIMIT", "lots")]).is_err());
        assert_eq!(
            config(&[("LEAKGATE_MEMORY_LIMIT", "512M")])
                .unwrap()
                .memory_limit,
            Some(512 << 20)
        );
    }
}
