//! Policy review tooling shared by `satgate test`, `matrix`, `diff`, `verify` and `explain`.
//!
//! - [`space`]: the finite decision space the schema lets policies see, its enumeration, and the
//!   scan that says when a policy reads something the enumeration does not vary.
//! - [`matrix`]: the access matrix over that space, rendered for reviewers (markdown) or tools.

pub mod matrix;
pub mod space;
