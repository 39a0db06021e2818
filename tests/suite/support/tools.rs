//! Outside tools some tests run (cvc5, minisign, promtool, the reference OpenMetrics parser).
//! Without one, its tests print SKIPPED straight to the terminal (the harness hides what passing
//! tests print) and pass, so `cargo test` passes on a machine with only Rust; with the named
//! environment variable set, as `.ci/run` sets them, a missing tool fails the test instead.

use std::io::Write;

/// Whether a tool `runs`; if not, says so (SKIPPED `test`: `why`) or fails when `require` is set.
pub fn available(test: &str, runs: bool, require: &str, why: &str) -> bool {
    if !runs {
        assert!(std::env::var_os(require).is_none(), "{why}, and {require} is set");
        let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
    }
    runs
}
