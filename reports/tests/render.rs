//! The writers on a report that holds one of each kind of scenario: clean, an expected
//! leak, an unexpected leak, a crash and a scaling scenario. Text outputs are pinned with
//! insta snapshots; charts are drawn and their content checked; the HTML page is checked
//! for what a reviewer must find on it.

use leakgate_reports::render::{self, chart, dhat, html, junit, markdown};
use leakgate_reports::{
    Crash, CrashCause, Environment, Finding, Frame, Policy, Report, Resource, Sample, ScalePoint,
    Scaling, ScenarioReport, Site, TrendStatistics, Verdict, text,
};

/// A heap series: `baseline`, then one sample per iteration from `values` (bytes above it).
fn series(scenario: &mut ScenarioReport, values: impl IntoIterator<Item = u64>) {
    let base = 1 << 20;
    scenario.series.baseline = Some(Sample::heap(base, 1000, base, 5000));
    let mut peak = base;
    for (i, value) in values.into_iter().enumerate() {
        peak = peak.max(base + value + 512);
        scenario.series.iterations.push(Sample::heap(
            base + value,
            1000 + i as u64,
            peak,
            5000 + 10 * i as u64,
        ));
    }
    scenario.series.end = scenario.series.iterations.last().copied();
    scenario.iterations = scenario.series.iterations.len() as u32;
}

fn trend(resource: Resource, retained: i64, growth: bool) -> TrendStatistics {
    let mut t = TrendStatistics::new(resource, retained, 0);
    t.slope = retained as f64 / 100.0;
    t.new_highs = if growth { 90 } else { 1 };
    t.first_high = Some(if growth { 5 } else { 2 });
    t.last_high = Some(if growth { 99 } else { 2 });
    t.floor_rise = if growth { retained } else { 0 };
    t.persistence = if growth { "growing" } else { "plateau" }.to_owned();
    t.growth = growth;
    t
}

fn leaking_site(function: &str, bytes: u64, measured: u32) -> Site {
    let mut site = Site::new(bytes, measured as u64, measured, 0, measured - 1);
    site.iterations_per_quarter = vec![25, 25, 25, 25];
    site.bytes_by_iteration = vec![bytes / 10; 10];
    site.frames = vec![
        Frame::new(function, Some("src/engine.rs".to_owned()), Some(42)),
        Frame::new(
            "engine::checkpoint",
            Some("src/engine.rs".to_owned()),
            Some(7),
        ),
    ];
    site
}

fn report() -> Report {
    let mut report = Report::new("run-fixture");
    let mut environment = Environment::new("x86_64-unknown-linux-gnu", "debug");
    environment.leakgate_version = "0.1.0".to_owned();
    report.environment = Some(environment);

    let mut clean = ScenarioReport::new(
        "engine/checkpoint_loop",
        Verdict::Pass,
        "no leak: heap back at baseline",
    );
    series(&mut clean, (0..100).map(|i| (i % 7) * 64));
    clean.statistics.push(trend(Resource::Heap, 0, false));
    clean.policy = Some(Policy::new(60_000, 1.0));
    clean.duration_ms = 850;
    report.upsert(clean);

    let mut expected = ScenarioReport::new(
        "leak/registry",
        Verdict::Pass,
        "expected leak found: heap grew 4.7 KiB over 100 measured iterations (48 B/iteration)",
    );
    series(&mut expected, (0..100).map(|i| i * 48));
    let mut finding = Finding::new(Resource::Heap, 4800, 100);
    finding.expected = true;
    finding.message = "heap grew 4.7 KiB over 100 measured iterations (48 B/iteration)".to_owned();
    finding
        .sites
        .push(leaking_site("engine::remember", 4800, 100));
    expected.findings.push(finding);
    expected.expected_leaks.push(Resource::Heap);
    expected.statistics.push(trend(Resource::Heap, 4800, true));
    expected.duration_ms = 1200;
    report.upsert(expected);

    let mut failing = ScenarioReport::new(
        "engine/snapshot_churn",
        Verdict::Fail,
        "heap grew 12.5 KiB over 100 measured iterations (128 B/iteration); 100 of 100 iterations left memory behind",
    );
    series(&mut failing, (0..100).map(|i| i * 128));
    let mut finding = Finding::new(Resource::Heap, 12_800, 100);
    finding.message = failing.summary.clone();
    finding
        .sites
        .push(leaking_site("engine::pin_segment", 12_800, 100));
    failing.findings.push(finding);
    let mut fds = Finding::new(Resource::Fds, 1, 100);
    fds.message = "1 file descriptor left open after settling: /tmp/db/data.wal".to_owned();
    fds.leaked.push("/tmp/db/data.wal".to_owned());
    failing.findings.push(fds);
    failing.statistics.push(trend(Resource::Heap, 12_800, true));
    failing.duration_ms = 2100;
    report.upsert(failing);

    let mut crashed = ScenarioReport::new(
        "incident/page_cycle",
        Verdict::Crashed,
        "crashed in iteration 3: stack overflow, recursing through engine::count_leaves",
    );
    let mut crash = Crash::new(CrashCause::StackOverflow, "iteration 3", None);
    crash.signal = Some("SIGABRT".to_owned());
    crash.stack = vec![
        Frame::new(
            "engine::count_leaves",
            Some("src/check.rs".to_owned()),
            Some(19)
        );
        3
    ];
    crashed.crash = Some(crash);
    crashed.output = Some("thread 'main' has overflowed its stack\n".to_owned());
    crashed.duration_ms = 300;
    report.upsert(crashed);

    let mut scaling = ScenarioReport::new(
        "leak/replay_whole_log",
        Verdict::Fail,
        "peak grows linear with the input (exponent 1.00), declared constant",
    );
    series(&mut scaling, (0..5).map(|i| i * 1000));
    let points = [512u64, 1024, 2048, 4096]
        .iter()
        .map(|&size| ScalePoint::new(size, size * 1024, 0))
        .collect();
    scaling.scaling = Some(Scaling::new(
        points,
        1.0,
        1024.0,
        0.0,
        "linear",
        Some("constant"),
    ));
    let mut peak = Finding::new(Resource::Peak, 4 << 20, 5);
    peak.message = scaling.summary.clone();
    scaling.findings.push(peak);
    scaling.duration_ms = 1000;
    report.upsert(scaling);
    report
}

#[test]
fn the_markdown_summary_tables_every_scenario_and_expands_the_failing_ones() {
    let summary = markdown::summary(&report(), Some("charts"));
    insta::assert_snapshot!(summary);
}

#[test]
fn the_console_table_has_a_row_per_scenario_and_the_totals() {
    insta::assert_snapshot!(text::run_table(&report().scenarios));
}

#[test]
fn junit_has_a_case_per_scenario_with_failures_and_crash_causes() {
    insta::assert_snapshot!(junit::xml(&report()).unwrap());
}

fn well_formed(svg: &str) {
    let mut reader = quick_xml::Reader::from_str(svg);
    let mut depth = 0i32;
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Start(_)) => depth += 1,
            Ok(quick_xml::events::Event::End(_)) => depth -= 1,
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(_) => {}
            Err(error) => panic!("malformed SVG at {}: {error}", reader.buffer_position()),
        }
    }
    assert_eq!(depth, 0, "unbalanced SVG");
}

fn png_of(scenario: &ScenarioReport) -> (u32, u32, usize) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("chart.png");
    chart::png(scenario, &path).unwrap();
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).unwrap();
    let inked = pixels[..info.buffer_size()]
        .chunks(3)
        .filter(|p| p.iter().any(|&c| c < 200))
        .count();
    (info.width, info.height, inked)
}

#[test]
fn each_kind_of_chart_draws_its_series_and_axes() {
    let report = report();
    let leak = report.scenario("engine/snapshot_churn").unwrap();
    assert_eq!(
        chart::panels(leak),
        [chart::Panel::Memory, chart::Panel::Sites]
    );
    let svg = chart::svg(leak).unwrap();
    well_formed(&svg);
    for text in [
        "engine/snapshot_churn: memory above baseline",
        "Rust heap",
        "measured iteration",
        "growth from iteration 5",
        "peak 12.9 KiB",
        "#1 engine::pin_segment",
        "surviving bytes by the iteration that allocated them",
    ] {
        assert!(svg.contains(text), "missing {text:?}");
    }
    let (width, height, inked) = png_of(leak);
    assert_eq!((width, height), (chart::WIDTH, 2 * chart::PANEL_HEIGHT));
    assert!(inked > 5_000, "a blank chart: {inked} inked pixels");

    let scaling = report.scenario("leak/replay_whole_log").unwrap();
    assert_eq!(
        chart::panels(scaling),
        [chart::Panel::Memory, chart::Panel::Scaling]
    );
    let svg = chart::svg(scaling).unwrap();
    well_formed(&svg);
    for text in [
        "input size",
        "exponent 1.00 (linear, declared constant)",
        "peak at each size",
        "fit:",
    ] {
        assert!(svg.contains(text), "missing {text:?}");
    }
    assert_eq!(png_of(scaling).1, 2 * chart::PANEL_HEIGHT);

    // A crash before the first measured iteration has nothing to plot: its chart says
    // what ended it instead of drawing empty axes.
    let crashed = report.scenario("incident/page_cycle").unwrap();
    assert_eq!(chart::panels(crashed), [chart::Panel::Nothing]);
    let svg = chart::svg(crashed).unwrap();
    well_formed(&svg);
    assert!(svg.contains("incident/page_cycle: no measured iteration to draw"));
    assert!(svg.contains("crashed in iteration 3: stack overflow"));
}

#[test]
fn the_page_shows_every_scenario_expands_failures_and_marks_expected_findings() {
    let report = report();
    let svgs: Vec<String> = report
        .scenarios
        .iter()
        .map(|s| chart::svg(s).unwrap())
        .collect();
    let page = html::page(&report, &svgs);
    for scenario in &report.scenarios {
        assert!(page.contains(&format!("id=\"s-{}\"", render::file_stem(&scenario.name))));
    }
    // Failing ones open, passing ones closed; every chart inline.
    assert!(page.contains("<section id=\"s-engine~snapshot_churn\" class=\"fail\"><details open>"));
    assert!(page.contains("<section id=\"s-engine~checkpoint_loop\" class=\"pass\"><details>"));
    assert_eq!(
        page.matches("<div class=\"chart\"><svg").count(),
        report.scenarios.len(),
        "every chart inline"
    );
    assert!(page.contains("heap <span class=\"expected-tag\">expected</span>"));
    assert!(page.contains("engine::pin_segment &nbsp;src/engine.rs:42"));
    assert!(page.contains("/tmp/db/data.wal"));
    assert!(page.contains("engine::count_leaves"));
    // Self-contained: nothing fetched from elsewhere.
    for fetch in ["src=\"http", "href=\"http", "url(http", "@import"] {
        assert!(
            !page.contains(fetch),
            "the page fetches from elsewhere: {fetch}"
        );
    }
    assert!(
        !page.contains("<?xml"),
        "an SVG's XML declaration inside HTML"
    );
}

#[test]
fn dhat_files_hold_the_sites_of_heap_findings_in_dhat_rs_format() {
    let report = report();
    let leak = report.scenario("engine/snapshot_churn").unwrap();
    let file: serde_json::Value =
        serde_json::from_str(&dhat::file(leak, &report).unwrap()).unwrap();
    assert_eq!(file["dhatFileVersion"], 2);
    assert_eq!(file["mode"], "rust-heap");
    assert_eq!(file["pps"][0]["eb"], 12_800);
    assert_eq!(file["ftbl"][0], "[root]");
    assert_eq!(file["ftbl"][1], "engine::pin_segment (src/engine.rs:42:0)");
    assert!(dhat::file(report.scenario("engine/checkpoint_loop").unwrap(), &report).is_none());
}

#[test]
fn render_all_writes_every_output_next_to_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let written = render::render_all(&report(), dir.path(), render::CHARTS_DIR).unwrap();
    for file in [
        "index.html",
        "summary.md",
        "junit.xml",
        "charts/engine~snapshot_churn.svg",
        "charts/engine~snapshot_churn.png",
        "dhat/engine~snapshot_churn.json",
        "dhat/leak~registry.json",
    ] {
        assert!(dir.path().join(file).is_file(), "{file} missing");
        assert!(written.contains(&dir.path().join(file)));
    }
    assert!(dir.path().join("charts/incident~page_cycle.svg").exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("charts"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn degenerate_reports_draw_without_panicking() {
    let mut one = ScenarioReport::new("edge/one_iteration", Verdict::Pass, "");
    series(&mut one, [0]);
    let svg = chart::svg(&one).unwrap();
    assert!(
        !svg.contains("confirmation extension"),
        "one planned, one ran"
    );
    let mut flat = ScenarioReport::new("edge/all_zero", Verdict::Pass, "");
    series(&mut flat, [0; 50]);
    chart::svg(&flat).unwrap();
    let mut wild = ScenarioReport::new("edge/wild_fit", Verdict::Fail, "");
    let points = vec![ScalePoint::new(1, 10, 0), ScalePoint::new(2, 20, -5)];
    wild.scaling = Some(Scaling::new(
        points,
        f64::NAN,
        1e308,
        -1e308,
        "superlinear",
        None,
    ));
    let svg = chart::svg(&wild).unwrap();
    assert!(
        !svg.contains("fit:"),
        "a fit that is not finite is not drawn"
    );
}
