//! Storage scenarios for leakgate, and the seeded scenarios leakgate tests itself with.
//!
//! The self-test targets live in `tests/`: `selftest` seeds every leak kind leakgate must
//! catch (each declared with `expect_leak` and the function it must be attributed to)
//! next to the clean patterns it must let through; `containment` runs the
//! `crash-fixture` binary, whose scenarios panic, abort, overflow the stack, segfault and
//! hang, and checks that each is reported by name and cause while the others still run.
#![forbid(unsafe_code)]
