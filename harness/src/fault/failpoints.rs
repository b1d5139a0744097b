//! Failpoints: make a named point in the code under test fail on its k-th hit.
//!
//! The code under test declares points with the [`fail`] crate's `fail_point!` macro and
//! builds with `fail/failpoints` enabled in the leak test:
//!
//! ```
//! use leakgate::fault::failpoints::{self, fail::fail_point};
//! use std::io;
//!
//! fn restore() -> io::Result<()> {
//!     // copy the files into the staging directory, then:
//!     fail_point!("restore::before_rename", |_| Err(io::Error::other("injected")));
//!     Ok(()) // rename into place
//! }
//!
//! let armed = failpoints::arm("restore::before_rename", 2).unwrap();
//! assert!(restore().is_ok());
//! assert!(restore().is_err()); // the second hit fails
//! assert!(restore().is_ok());
//! drop(armed);
//! ```
//!
//! A scenario arms the point for each iteration with [`arm`]; [`sweep`] makes one
//! scenario per point, so every error path is checked for leftovers.

pub use fail;

/// Disarms its failpoint when dropped.
#[must_use = "the failpoint is disarmed when the guard is dropped"]
pub struct Armed {
    name: String,
}

impl Drop for Armed {
    fn drop(&mut self) {
        fail::remove(&self.name);
    }
}

/// Makes failpoint `name` take its closure (return the error) on its `hit`-th hit from
/// now (1-based), and pass through before and after.
///
/// Fails if `hit` is 0 or the fail crate rejects the configuration.
pub fn arm(name: &str, hit: usize) -> Result<Armed, String> {
    if hit == 0 {
        return Err(format!("failpoint {name}: hits count from 1"));
    }
    let actions = match hit {
        1 => "1*return->off".to_owned(),
        k => format!("{}*off->1*return->off", k - 1),
    };
    fail::cfg(name, &actions)?;
    Ok(Armed {
        name: name.to_owned(),
    })
}

/// One scenario per failpoint, built by `scenario(name)`: sweeps every error path.
pub fn sweep<S>(
    names: &[&str],
    mut scenario: impl FnMut(&str) -> crate::Scenario<S>,
) -> Vec<crate::Scenario<S>> {
    names.iter().map(|name| scenario(name)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step() -> Result<(), String> {
        fail::fail_point!("leakgate::test::step", |_| Err("injected".to_owned()));
        Ok(())
    }

    #[test]
    fn the_kth_hit_fails_and_disarming_restores_the_path() {
        let armed = arm("leakgate::test::step", 3).unwrap();
        let outcomes: Vec<bool> = (0..5).map(|_| step().is_ok()).collect();
        assert_eq!(outcomes, [true, true, false, true, true]);
        drop(armed);
        assert!(step().is_ok());
        assert!(arm("leakgate::test::step", 0).is_err());
    }
}
