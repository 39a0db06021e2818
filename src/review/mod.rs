//! Policy review tooling shared by `satgate test`, `matrix`, `diff`, `verify` and `explain`.
//!
//! - [`space`]: the finite decision space the schema lets policies see, its enumeration, and the
//!   scan that says when a policy reads something the enumeration does not vary.
//! - [`matrix`]: the access matrix over that space, rendered for reviewers (markdown) or tools.
//! - [`diff`]: what a policy change newly allows or denies, over the matrix and a record corpus.
//! - [`cases`]: policy test files (Cedar `run-tests` format and satgate's record-level format).
//! - [`junit`]: JUnit XML for CI test reports.
//! - [`symbolic`]: proofs over all requests with the Cedar symbolic compiler and cvc5.

pub mod cases;
pub mod diff;
pub mod junit;
pub mod matrix;
pub mod space;
pub mod symbolic;
