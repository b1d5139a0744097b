//! Suppressions: setting a known finding aside while it is being fixed, as goleak's
//! `IgnoreTopFunction` and LSan's suppression files do. A rule is one line:
//!
//! ```text
//! function:hashbrown::raw::RawTable::reserve   # upstream issue 123, fixed in 0.16
//! thread:tokio-runtime-worker                  # the runtime's pool outlives the scenario
//! path:.lock                                   # the engine's lock file, by design
//! ```
//!
//! `function:` matches a heap, C heap or peak finding when any frame of its top site
//! contains the text; `thread:` a threads finding when every leaked thread's name does;
//! `path:` a files or descriptors finding when every leaked path does. The comment after
//! `#` says why, and is required. Rules come from a scenario's `.suppress(..)` (for it
//! alone) and from the file `LEAKGATE_SUPPRESSIONS` names (for every scenario).
//! A suppressed finding stays in every report, marked with the rule that matched; a rule
//! that matched nothing in a run is reported as stale.

use std::path::{Path, PathBuf};

use leakgate_reports::{Finding, Resource};

/// What a rule looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Function,
    Thread,
    Path,
}

/// One suppression rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Suppression {
    kind: Kind,
    pattern: String,
    reason: String,
    /// Where it was declared: `file:line`, or `.suppress(..)`.
    origin: String,
}

/// A rule that cannot be read, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {problem}")]
pub struct SuppressionError {
    origin: String,
    problem: String,
}

const FORMAT: &str = "expected `function:TEXT`, `thread:TEXT` or `path:TEXT`, then `# why`";

impl Suppression {
    /// Parses `rule` (`kind:pattern  # reason`), declared at `origin`.
    pub(crate) fn parse(rule: &str, origin: &str) -> Result<Self, SuppressionError> {
        let error = |problem: String| SuppressionError {
            origin: origin.to_owned(),
            problem,
        };
        let (rule, reason) = rule
            .split_once('#')
            .map(|(rule, reason)| (rule.trim(), reason.trim()))
            .ok_or_else(|| {
                error(format!(
                    "{:?} has no comment saying why; {FORMAT}",
                    rule.trim()
                ))
            })?;
        if reason.is_empty() {
            return Err(error(format!(
                "{rule:?} has an empty comment; say why it is suppressed"
            )));
        }
        let (kind, pattern) = rule
            .split_once(':')
            .ok_or_else(|| error(format!("{rule:?}: {FORMAT}")))?;
        let kind = match kind.trim() {
            "function" => Kind::Function,
            "thread" => Kind::Thread,
            "path" => Kind::Path,
            other => return Err(error(format!("unknown kind {other:?}; {FORMAT}"))),
        };
        let pattern = pattern.trim();
        if pattern.is_empty() {
            return Err(error(format!(
                "{rule:?} matches nothing: give the text to match"
            )));
        }
        Ok(Self {
            kind,
            pattern: pattern.to_owned(),
            reason: reason.to_owned(),
            origin: origin.to_owned(),
        })
    }

    /// The rules of the file at `path`: one per line; blank lines and lines that start
    /// with `#` are skipped. A line that is not a rule is an error naming `path:line`.
    pub(crate) fn load(path: &Path) -> Result<Vec<Self>, SuppressionError> {
        let text = std::fs::read_to_string(path).map_err(|e| SuppressionError {
            origin: path.display().to_string(),
            problem: format!("cannot read the suppressions file: {e}"),
        })?;
        text.lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty() && !line.trim_start().starts_with('#'))
            .map(|(index, line)| {
                Self::parse(
                    line,
                    &format!("{}:{}", PathBuf::from(path).display(), index + 1),
                )
            })
            .collect()
    }

    /// The rule as reports show it: `function:TEXT (why; origin)`.
    pub(crate) fn describe(&self) -> String {
        let kind = match self.kind {
            Kind::Function => "function",
            Kind::Thread => "thread",
            Kind::Path => "path",
        };
        format!("{kind}:{} ({}; {})", self.pattern, self.reason, self.origin)
    }

    /// Whether this rule sets `finding` aside.
    pub(crate) fn matches(&self, finding: &Finding) -> bool {
        let all_leaked = || {
            !finding.leaked.is_empty() && finding.leaked.iter().all(|l| l.contains(&self.pattern))
        };
        match (self.kind, finding.resource) {
            (Kind::Function, Resource::Heap | Resource::CHeap | Resource::Peak) => {
                finding.sites.first().is_some_and(|site| {
                    site.frames
                        .iter()
                        .any(|f| f.function.contains(&self.pattern))
                })
            }
            (Kind::Thread, Resource::Threads) => all_leaked(),
            (Kind::Path, Resource::Files | Resource::Fds) => all_leaked(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leakgate_reports::{Frame, Site};

    fn heap_finding(functions: &[&str]) -> Finding {
        let mut finding = Finding::new(Resource::Heap, 100, 10);
        let mut site = Site::new(100, 10, 10, 0, 9);
        site.frames = functions
            .iter()
            .map(|f| Frame::new(*f, None, None))
            .collect();
        finding.sites.push(site);
        finding
    }

    #[test]
    fn rules_match_by_function_thread_and_path() {
        let rule =
            Suppression::parse("function:RawTable::reserve  # upstream #123", "t:1").unwrap();
        assert!(rule.matches(&heap_finding(&[
            "engine::cache",
            "hashbrown::RawTable::reserve"
        ])));
        assert!(!rule.matches(&heap_finding(&["engine::cache"])));
        assert_eq!(
            rule.describe(),
            "function:RawTable::reserve (upstream #123; t:1)"
        );

        let mut threads = Finding::new(Resource::Threads, 2, 10);
        threads.leaked = vec!["pool-worker-1".into(), "pool-worker-2".into()];
        let rule = Suppression::parse("thread:pool-worker # the pool outlives it", "t:2").unwrap();
        assert!(rule.matches(&threads));
        threads.leaked.push("flusher".into());
        assert!(!rule.matches(&threads), "every leaked thread must match");

        let mut files = Finding::new(Resource::Files, 1, 10);
        files.leaked = vec!["/tmp/x/LOCK".into()];
        assert!(
            Suppression::parse("path:LOCK # by design", "t:3")
                .unwrap()
                .matches(&files)
        );
        assert!(
            !Suppression::parse("path:LOCK # by design", "t:3")
                .unwrap()
                .matches(&heap_finding(&["LOCK"]))
        );
    }

    #[test]
    fn a_malformed_rule_names_its_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("leakgate.supp");
        std::fs::write(
            &path,
            "# known leaks\n\nfunction:ok # fine\nfunction:nowhy\n",
        )
        .unwrap();
        let err = Suppression::load(&path).unwrap_err().to_string();
        assert!(err.ends_with("leakgate.supp:4: \"function:nowhy\" has no comment saying why; expected `function:TEXT`, `thread:TEXT` or `path:TEXT`, then `# why`"), "{err}");
        std::fs::write(&path, "stack:foo # why\n").unwrap();
        assert!(
            Suppression::load(&path)
                .unwrap_err()
                .to_string()
                .contains("leakgate.supp:1: unknown kind \"stack\"")
        );
        std::fs::write(&path, "function:   # why\n").unwrap();
        assert!(
            Suppression::load(&path)
                .unwrap_err()
                .to_string()
                .contains("matches nothing")
        );
        std::fs::write(&path, "function:a # why\n# comment\npath:b # why too\n").unwrap();
        assert_eq!(Suppression::load(&path).unwrap().len(), 2);
    }
}
