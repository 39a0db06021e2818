//! Decisions: which field classes of a record a principal may see, as the Cedar policies say.
//!
//! The policies are the only source of truth; this module only feeds them and remembers their
//! answers. A Cedar request is a function of the principal's role and a record's [`Facts`] (see
//! [`request`]), a finite space ([`space`]), so the answer for one (role, facts) pair is computed
//! once and reused for every record with the same facts, first within a request and then across
//! requests and principals through a bounded cache that lives and dies with the policy set.
//!
//! Fail closed: a class is allowed only when Cedar says Allow *and* no policy errored. A request
//! that cannot be built allows nothing.

pub mod guard;
pub mod policies;
pub mod request;
pub mod space;
pub mod store;

use std::path::Path;
use std::sync::Arc;

use cedar_policy::{Authorizer, Decision, PolicyId, PolicySet, Schema};
use prometheus_client::metrics::counter::Counter;
use rustc_hash::FxHashMap;

pub use policies::{Finding, LoadError, LoadedPolicies, Origin, PolicyIdentity};
pub use store::PolicyStore;

use crate::model::{Class, Classes, DeviceType, Eui64, MessageType, Principal, Role};
use crate::ownership::{DeviceEntry, PartyRegistration};

/// Everything about a record that a policy can see (the schema's `Record`). Every field is of a
/// finite type: see [`space`] for why that matters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Facts {
    pub message_type: MessageType,
    pub principal_is_user: bool,
    /// `None` when the record names no Device or the inventory cannot describe it.
    pub device: Option<DeviceFacts>,
}

/// The schema's `Device`: the inventory's view of the record's Device, relative to the principal.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct DeviceFacts {
    /// The inventory's type, closed over: a HAN type or `OTHER`.
    pub device_type: DeviceType,
    pub principal_party: PartyRegistration,
}

impl DeviceFacts {
    pub fn of(principal: &Principal, entry: &DeviceEntry) -> Self {
        Self {
            device_type: entry.kind,
            principal_party: entry.registration_of(&principal.party),
        }
    }
}

impl Facts {
    pub fn new(principal: &Principal, user_id: Eui64, message_type: MessageType, device: Option<DeviceFacts>) -> Self {
        Self {
            message_type,
            principal_is_user: principal.user_id == user_id,
            device,
        }
    }
}

/// One class's answer, with the `@id`s that decided it (for `explain` and tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassDecision {
    pub class: Class,
    pub allowed: bool,
    pub reasons: Vec<String>,
    pub errors: Vec<String>,
}

/// All four classes for one (principal, facts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub classes: Vec<ClassDecision>,
}

impl Verdict {
    /// The classes the principal may see: none at all when the title is denied, since such a
    /// record is left out entirely.
    pub fn allowed(&self) -> Classes {
        let allowed: Classes = self.classes.iter().filter(|d| d.allowed).map(|d| d.class).collect();
        if allowed.contains(Class::Title) {
            allowed
        } else {
            Classes::NONE
        }
    }
}

/// Counters for decisions. Cloning shares the counters, so a reloaded policy set keeps counting
/// into the same metrics.
#[derive(Default, Debug, Clone)]
pub struct DecisionStats {
    pub hits: Counter,
    pub misses: Counter,
    pub errors: Counter,
}

/// A loaded policy set and the decisions it has made so far.
pub struct PolicyEngine {
    loaded: LoadedPolicies,
    authorizer: Authorizer,
    cache: moka::sync::Cache<(Role, Facts), Decided>,
    pub stats: DecisionStats,
}

/// One decision as the filter keeps it: the classes allowed, and the policies that decided the
/// title (the permits when it is allowed, the forbids when denied; none: denied by default).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decided {
    pub classes: Classes,
    pub title_by: Arc<[String]>,
}

/// How many records of a request each policy let through or kept out, by `@id`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Tally {
    /// Records written, by the permits that allowed their title.
    pub allowed_by: std::collections::BTreeMap<String, u64>,
    /// Records left out, by the forbids that denied their title (`(default deny)`: no permit).
    pub denied_by: std::collections::BTreeMap<String, u64>,
}

/// How many (role, facts) answers are kept across requests (the whole space is 28,322).
const CACHE_CAPACITY: u64 = 100_000;

impl PolicyEngine {
    /// Loads `dir/*.cedar` and the schema, strictly validated.
    pub fn load(dir: &Path, schema: &Path) -> Result<Self, LoadError> {
        Self::new(policies::load(dir, schema)?)
    }

    pub fn new(loaded: LoadedPolicies) -> Result<Self, LoadError> {
        Self::with_stats(loaded, DecisionStats::default())
    }

    /// Like [`PolicyEngine::new`], counting into existing counters.
    pub fn with_stats(loaded: LoadedPolicies, stats: DecisionStats) -> Result<Self, LoadError> {
        let engine = Self {
            loaded,
            authorizer: Authorizer::new(),
            cache: moka::sync::Cache::new(CACHE_CAPACITY),
            stats,
        };
        engine.self_check()?;
        Ok(engine)
    }

    /// A schema that validates the policies but does not describe what satgate supplies would
    /// make every decision fail (closed). Refuse it at load time instead, loudly.
    fn self_check(&self) -> Result<(), LoadError> {
        let facts = Facts {
            message_type: MessageType::ServiceRequest,
            principal_is_user: false,
            device: Some(DeviceFacts {
                device_type: DeviceType::Esme,
                principal_party: PartyRegistration::NONE,
            }),
        };
        request::build(self.schema(), Role::ImportSupplier, &facts)
            .map(drop)
            .map_err(|e| {
                LoadError::Invalid(vec![Finding {
                    file: "schema".into(),
                    line: 1,
                    column: 1,
                    message: format!("the schema does not match the requests satgate builds: {e}"),
                }])
            })
    }

    pub fn policies(&self) -> &PolicySet {
        &self.loaded.policies
    }

    pub fn schema(&self) -> &Schema {
        &self.loaded.schema
    }

    pub fn loaded(&self) -> &LoadedPolicies {
        &self.loaded
    }

    /// Which reviewed files this set is.
    pub fn identity(&self) -> &PolicyIdentity {
        &self.loaded.identity
    }

    pub fn origin(&self, id: &PolicyId) -> Option<&Origin> {
        self.loaded.origins.get(id)
    }

    /// Asks Cedar directly about every class, with no memo. Fails closed on any error.
    pub fn evaluate(&self, role: Role, facts: &Facts) -> Verdict {
        self.ask(role, facts, false)
    }

    /// Asks Cedar about the title first, and about the other classes only if the title is
    /// allowed: without its title a record is left out whatever the other answers are.
    fn ask(&self, role: Role, facts: &Facts, stop_without_title: bool) -> Verdict {
        let built = match request::build(self.schema(), role, facts) {
            Ok(b) => b,
            Err(e) => {
                self.stats.errors.inc();
                let classes = Class::ALL
                    .map(|class| ClassDecision {
                        class,
                        allowed: false,
                        reasons: vec![],
                        errors: vec![e.clone()],
                    })
                    .to_vec();
                return Verdict { classes };
            }
        };
        let mut classes = Vec::with_capacity(4);
        for (&class, req) in Class::ALL.iter().zip(&built.requests) {
            let resp = self.authorizer.is_authorized(req, self.policies(), &built.entities);
            let errors: Vec<String> = resp.diagnostics().errors().map(ToString::to_string).collect();
            if !errors.is_empty() {
                self.stats.errors.inc();
            }
            let mut reasons: Vec<String> = resp.diagnostics().reason().map(ToString::to_string).collect();
            reasons.sort();
            let allowed = resp.decision() == Decision::Allow && errors.is_empty();
            classes.push(ClassDecision {
                class,
                allowed,
                reasons,
                errors,
            });
            if stop_without_title && class == Class::Title && !allowed {
                break;
            }
        }
        Verdict { classes }
    }

    /// The allowed classes, from the cache when this (role, facts) was decided before.
    pub fn allowed(&self, role: Role, facts: &Facts) -> Classes {
        self.decided(role, facts).classes
    }

    /// The allowed classes and what decided the title, from the cache when decided before.
    pub fn decided(&self, role: Role, facts: &Facts) -> Decided {
        let key = (role, *facts);
        if let Some(d) = self.cache.get(&key) {
            self.stats.hits.inc();
            return d;
        }
        self.stats.misses.inc();
        let verdict = self.ask(role, facts, true);
        let title_by = verdict
            .classes
            .first()
            .map_or_else(Vec::new, |title| title.reasons.clone());
        let decided = Decided {
            classes: verdict.allowed(),
            title_by: title_by.into(),
        };
        self.cache.insert(key, decided.clone());
        decided
    }

    /// A per-request view for one principal, with a local memo in front of the shared cache.
    pub fn for_principal(self: &Arc<Self>, principal: &Principal) -> Decisions {
        Decisions {
            engine: Arc::clone(self),
            principal: principal.clone(),
            local: FxHashMap::default(),
        }
    }
}

/// Decisions for one principal within one request. The local map makes the common case (a page
/// of records sharing a few facts) a single hash lookup per record.
/// It holds the policy set it started with, so a reload never changes answers mid-stream.
pub struct Decisions {
    engine: Arc<PolicyEngine>,
    principal: Principal,
    /// Each decision of this request, and how many records it was asked for.
    local: FxHashMap<Facts, (Decided, u64)>,
}

impl Decisions {
    /// The classes of one record's facts (and one more record counted for them).
    pub fn allowed(&mut self, facts: &Facts) -> Classes {
        if let Some((d, n)) = self.local.get_mut(facts) {
            *n += 1;
            return d.classes;
        }
        let d = self.engine.decided(self.principal.role, facts);
        let classes = d.classes;
        self.local.insert(*facts, (d, 1));
        classes
    }

    /// Which policies let this request's records through or kept them out, and how many.
    pub fn tally(&self) -> Tally {
        let mut t = Tally::default();
        for (d, n) in self.local.values() {
            let into = if d.classes.contains(Class::Title) {
                &mut t.allowed_by
            } else {
                &mut t.denied_by
            };
            if d.title_by.is_empty() {
                *into.entry("(default deny)".into()).or_default() += n;
            }
            for id in d.title_by.iter() {
                *into.entry(id.clone()).or_default() += n;
            }
        }
        t
    }

    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    pub fn engine(&self) -> &Arc<PolicyEngine> {
        &self.engine
    }
}
