//! (d) Reusing a decision never differs from asking Cedar directly: for any sequence of
//! (principal, facts) queries against one engine (so its shared cache fills up across principals),
//! the memoized answer equals a fresh, uncached Cedar evaluation.

use std::sync::Arc;

use proptest::prelude::*;
use satgate::decision::{DeviceFacts, Facts, PolicyEngine};
use satgate::model::{DeviceType, Eui64, MessageType, Principal, Role};
use satgate::ownership::PartyRegistration;

use crate::support::cases;

fn principal() -> impl Strategy<Value = Principal> {
    (
        0u64..3,
        proptest::sample::select(Role::ALL),
        proptest::sample::select(vec!["SUPA", "SUPB", "DNO1"]),
    )
        .prop_map(|(sub, role, party)| Principal {
            user_id: Eui64::from_u64(0xA0 + sub),
            role,
            party: party.into(),
        })
}

fn facts() -> impl Strategy<Value = Facts> {
    let device = (
        proptest::sample::select(vec![
            "ESME", "GSME", "CHF", "GPF", "PPMID", "HCALCS", "IHD", "CAD", "SMETS1", "esme", "",
        ]),
        0u8..32,
    )
        .prop_map(|(ty, bits)| DeviceFacts {
            device_type: DeviceType::of_inventory(ty),
            principal_party: PartyRegistration::from_bits(bits),
        });
    (
        proptest::sample::select(MessageType::ALL),
        any::<bool>(),
        proptest::option::of(device),
    )
        .prop_map(|(message_type, principal_is_user, device)| Facts {
            message_type,
            principal_is_user,
            device,
        })
}

fn shared_engine() -> Arc<PolicyEngine> {
    // A separate engine from the other tests, so its cache holds only what this test asked.
    static ENGINE: std::sync::OnceLock<Arc<PolicyEngine>> = std::sync::OnceLock::new();
    ENGINE
        .get_or_init(|| Arc::new(PolicyEngine::load("policies".as_ref(), "schemas/sat.cedarschema".as_ref()).unwrap()))
        .clone()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn memoized_equals_direct_cedar(
        pool in proptest::collection::vec(facts(), 1..4),
        principals in proptest::collection::vec(principal(), 1..8),
    ) {
        let engine = shared_engine();
        // Every principal asks about the same few facts, so cached answers meet other principals.
        for (f, p) in pool.iter().flat_map(|f| principals.iter().map(move |p| (f, p))) {
            let direct = engine.evaluate(p.role, f).allowed();
            prop_assert_eq!(engine.allowed(p.role, f), direct, "shared cache, {:?} {:?}", p, f);
            let mut per_request = engine.for_principal(p);
            prop_assert_eq!(per_request.allowed(f), direct);
            prop_assert_eq!(per_request.allowed(f), direct, "request-local memo");
        }
    }
}

#[test]
fn cache_is_used_and_keyed_by_role() {
    let engine = Arc::new(PolicyEngine::load("policies".as_ref(), "schemas/sat.cedarschema".as_ref()).unwrap());
    let owner = Principal {
        user_id: Eui64::from_u64(1),
        role: Role::ImportSupplier,
        party: "SUPA".into(),
    };
    // Another User of another Party in the same role: the facts already say how *its* Party is
    // registered, so equal facts mean an equal answer, and the cached one is exact.
    let colleague = Principal {
        user_id: Eui64::from_u64(2),
        party: "SUPB".into(),
        ..owner.clone()
    };
    let other_role = Principal {
        role: Role::GasSupplier,
        ..owner.clone()
    };
    let facts = Facts {
        message_type: MessageType::ServiceRequest,
        principal_is_user: false,
        device: Some(DeviceFacts {
            device_type: DeviceType::Esme,
            principal_party: PartyRegistration::IMPORT_SUPPLIER,
        }),
    };
    let first = engine.allowed(owner.role, &facts);
    let again = engine.allowed(colleague.role, &facts);
    assert_eq!(first, again);
    assert_eq!(engine.stats.misses.get(), 1);
    assert_eq!(engine.stats.hits.get(), 1);
    // Same facts, other role: a new decision, not the cached one.
    assert_ne!(engine.allowed(other_role.role, &facts), first);
    assert_eq!(engine.stats.misses.get(), 2);
}
