//! Turning recorded allocation sites into reported ones: [`survivors`] ranks the blocks
//! still live by site and symbolizes the sites that will be shown; [`peak_sites`] does the
//! same for the sites live at the heap's highest point.

use leakgate_reports::Site;

use crate::alloc::{peak, sites};
use crate::measure::Survivors;
use crate::symbolize::symbolize;
use crate::verdict::{self, MAX_SITES};

/// Ranks the surviving sites and symbolizes those that will be reported.
pub(crate) fn survivors(
    raw: Vec<sites::SiteSurvivors>,
    iterations: u32,
    measured: u32,
) -> Survivors {
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
