//! `junit.xml`: one test case per scenario, for CI systems' test tabs. A failure carries
//! the console text (summary, findings with their top sites, notes); a crash carries its
//! cause as the error type.

use std::time::Duration;

use quick_junit::{NonSuccessKind, Report as JunitReport, TestCase, TestCaseStatus, TestSuite};

use crate::schema::{Report, Verdict};
use crate::text::failure_text;

/// The JUnit XML of `report`, or quick-junit's error.
pub fn xml(report: &Report) -> Result<String, String> {
    let mut suite = TestSuite::new("leakgate");
    for scenario in &report.scenarios {
        let status = match scenario.verdict {
            Verdict::Pass => TestCaseStatus::success(),
            Verdict::Fail => {
                let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
                let kind = match scenario.findings.iter().find(|f| !f.expected) {
                    Some(finding) => format!("{} leak", finding.resource),
                    None if scenario.iteration_error.is_some() => "iteration error".to_owned(),
                    None => "expectation not met".to_owned(),
                };
                status
                    .set_type(kind)
                    .set_message(scenario.summary.as_str())
                    .set_description(failure_text(scenario, None));
                status
            }
            Verdict::Crashed => {
                let mut status = TestCaseStatus::non_success(NonSuccessKind::Error);
                let cause = scenario.crash.as_ref().map_or("crash".to_owned(), |c| {
                    serde_json::to_value(c.cause)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                });
                status
                    .set_type(cause)
                    .set_message(scenario.summary.as_str())
                    .set_description(failure_text(scenario, None));
                status
            }
        };
        let mut case = TestCase::new(scenario.name.as_str(), status);
        case.set_classname(scenario.name.split('/').next().unwrap_or("leakgate"))
            .set_time(Duration::from_millis(scenario.duration_ms));
        suite.add_test_case(case);
    }
    let mut junit = JunitReport::new(format!("leakgate {}", report.run_id));
    junit.add_test_suite(suite);
    junit.to_string().map_err(|e| e.to_string())
}
