//! Policy review tooling shared by `satgate test`, `matrix`, `diff`, `verify` and `explain`.
//!
//! - [`matrix`]: the access matrix over the whole decision space ([`crate::decision::space`],
//!   which serving owns: the guard uses it), rendered for reviewers (markdown) or tools.
//! - [`diff`]: what a policy change newly allows or denies, over the matrix and a record corpus.
//! - [`cases`]: policy test files (Cedar `run-tests` format and satgate's record-level format).
//! - [`junit`]: JUnit XML for CI test reports.
//! - [`symbolic`]: proofs over all requests with the Cedar symbolic compiler and cvc5.

pub mod cases;
pub mod diff;
pub mod junit;
pub mod matrix;
pub mod symbolic;
