//! Child mode: a test binary re-run by its parent for one scenario (see
//! [`crate::isolate`]). It opens the [`Channel`], installs the panic hook and the fault
//! handler, runs the scenario's session and sends the measurement. It judges nothing.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use crate::channel::Channel;
use crate::config::Config;
use crate::gate::Runnable;
use crate::measure::{Event, PROTOCOL};

/// Exit code of a child that could not run its scenario.
const HARNESS_ERROR: u8 = 2;

/// Runs the scenario named `name` from `scenarios`, reporting on the channel at
/// `channel_path`.
pub(crate) fn run(
    scenarios: Vec<Box<dyn Runnable>>,
    config: &Config,
    channel_path: &Path,
    name: &str,
) -> ExitCode {
    let channel = match Channel::open(channel_path) {
        Ok(channel) => Arc::new(channel),
        Err(error) => {
            eprintln!(
                "leakgate: cannot open the channel {}: {error}",
                channel_path.display()
            );
            return ExitCode::from(HARNESS_ERROR);
        }
    };
    channel.send(&Event::Hello {
        protocol: PROTOCOL,
        mappings: crate::maps::current(),
    });
    report_panics_to(Arc::clone(&channel));
    crate::crash_stack::install();
    let Some(mut scenario) = scenarios.into_iter().find(|s| s.spec().name == name) else {
        channel.send(&Event::HarnessError {
            message: format!("this test binary has no scenario named {name:?}"),
        });
        return ExitCode::from(HARNESS_ERROR);
    };
    match scenario.run(config, &channel) {
        Ok(measurement) => {
            channel.send(&Event::Finished {
                measurement: Box::new(measurement),
            });
            ExitCode::SUCCESS
        }
        Err(error) => {
            channel.send(&Event::HarnessError {
                message: error.to_string(),
            });
            ExitCode::from(HARNESS_ERROR)
        }
    }
}

/// Adds a panic's message and location to the channel, after the usual message on
/// stderr.
fn report_panics_to(channel: Arc<Channel>) {
    let print = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        print(info);
        let text = info
            .payload_as_str()
            .unwrap_or("(a panic with a non-string payload)");
        let message = match info.location() {
            Some(at) => format!("{text} (at {}:{})", at.file(), at.line()),
            None => text.to_owned(),
        };
        channel.send(&Event::Panic { message });
    }));
}
