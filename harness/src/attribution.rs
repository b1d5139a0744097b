//! Turning recorded allocation sites into reported ones, in the child: [`survivors`]
//! ranks the blocks still live by site and keeps the stacks of the sites that will be
//! shown; [`peak_sites`] does the same for the sites live at the heap's highest point.
//! Stacks travel as return addresses: the parent symbolizes them
//! ([`crate::symbolize::resolve_sites`]), once per test binary under `cargo test`
//! instead of once per scenario, since reading a binary's debug info takes most of a
//! second.

use leakgate_reports::Site;

use crate::alloc::{peak, sites};
use crate::measure::Survivors;
use crate::verdict::{self, MAX_SITES};

/// The surviving sites as the judge sees them, without frames (for decisions made
/// during the run, where symbolizing would cost more than it tells).
pub(crate) fn unsymbolized(raw: &[sites::SiteSurvivors]) -> Vec<Site> {
    raw.iter().map(site_of).collect()
}

fn site_of(s: &sites::SiteSurvivors) -> Site {
    let mut site = Site::new(
        s.bytes,
        s.blocks,
        s.iterations,
        s.first_iteration,
        s.last_iteration,
    );
    site.iterations_per_quarter = s.per_quarter.to_vec();
    site.bytes_by_iteration = s.bytes_by_iteration.clone();
    site
}

/// Ranks the surviving sites and keeps those that will be reported, with their stacks
/// when `stacks` (worth sending only for a finding).
pub(crate) fn survivors(
    raw: &[sites::SiteSurvivors],
    iterations: u32,
    measured: u32,
    stacks: bool,
) -> Survivors {
    let mut ranked: Vec<(Site, u32)> = raw.iter().map(|s| (site_of(s), s.site)).collect();
    verdict::rank_sites(&mut ranked, measured, |(site, _)| site);
    let reported = ranked
        .into_iter()
        .take(MAX_SITES)
        .map(|(mut site, id)| {
            if stacks {
                site.addresses = stack_of(id);
            }
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

fn stack_of(site: u32) -> Vec<u64> {
    sites::site_frames(site)
        .into_iter()
        .map(|ip| ip as u64)
        .collect()
}

/// The sites that made the heap's peak, with their stacks.
pub(crate) fn peak_sites() -> Vec<Site> {
    let (top, _) = peak::top(MAX_SITES);
    top.into_iter()
        .map(|(id, bytes)| {
            let mut site = Site::new(bytes, 0, 0, 0, 0);
            site.addresses = stack_of(id);
            site
        })
        .collect()
}
