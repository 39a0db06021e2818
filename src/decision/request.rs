//! The one place a Cedar request is built. Everything in it comes from the principal's role and
//! the record's [`Facts`]: the principal and the record are constant uids, the context is empty.
//! So two records with equal facts get the same request, and so the same answer (what makes
//! reusing decisions exact), and the requests Cedar can ever see are the finite space of
//! [`super::space`] (what makes the guard complete).

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::OnceLock;

use cedar_policy::{
    Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, Request, RestrictedExpression, Schema,
};

use super::Facts;
use crate::model::{Class, Role};
use crate::ownership::PartyRegistration;

/// A Cedar request for every class of one record.
pub struct CedarRequests {
    pub requests: [Request; 4],
    pub entities: Entities,
}

/// Builds the request for each class, checked against the schema. An error here means the
/// schema no longer describes what satgate supplies.
pub fn build(schema: &Schema, role: Role, facts: &Facts) -> Result<CedarRequests, String> {
    // Principals and records are judged on their role and facts, never on their identity: one
    // uid for all of each (docs: `super::space`).
    let principal_uid = uid("User", "principal");
    let record_uid = uid("Record", "record");

    let principal_entity = Entity::new(
        principal_uid.clone(),
        HashMap::from([(
            "role".to_owned(),
            RestrictedExpression::new_entity_uid(uid("Role", role.as_str())),
        )]),
        HashSet::new(),
    )
    .map_err(|e| e.to_string())?;

    let mut attrs = HashMap::from([
        (
            "messageType".to_owned(),
            RestrictedExpression::new_entity_uid(uid("MessageType", facts.message_type.as_str())),
        ),
        (
            "principalIsUser".to_owned(),
            RestrictedExpression::new_bool(facts.principal_is_user),
        ),
    ]);
    if let Some(device) = &facts.device {
        let registration = PartyRegistration::FLAGS.map(|(flag, name)| {
            (
                name.to_owned(),
                RestrictedExpression::new_bool(device.principal_party.contains(flag)),
            )
        });
        let device = RestrictedExpression::new_record([
            (
                "deviceType".to_owned(),
                RestrictedExpression::new_entity_uid(uid("DeviceType", device.device_type.as_str())),
            ),
            (
                "principalParty".to_owned(),
                RestrictedExpression::new_record(registration).map_err(|e| e.to_string())?,
            ),
        ])
        .map_err(|e| e.to_string())?;
        attrs.insert("device".to_owned(), device);
    }
    let record_entity = Entity::new(record_uid.clone(), attrs, HashSet::new()).map_err(|e| e.to_string())?;

    let entities =
        Entities::from_entities([principal_entity, record_entity], Some(schema)).map_err(|e| e.to_string())?;
    let request = |class: Class| {
        Request::new(
            principal_uid.clone(),
            action(class).clone(),
            record_uid.clone(),
            Context::empty(),
            Some(schema),
        )
        .map_err(|e| e.to_string())
    };
    Ok(CedarRequests {
        requests: [
            request(Class::Title)?,
            request(Class::Identity)?,
            request(Class::Metadata)?,
            request(Class::Payload)?,
        ],
        entities,
    })
}

/// `ty` is always one of this module's constant type names; `id` may be any string.
fn uid(ty: &'static str, id: &str) -> EntityUid {
    let ty = EntityTypeName::from_str(ty).expect("constant entity type names parse");
    EntityUid::from_type_name_and_id(ty, EntityId::new(id))
}

/// The Cedar action uid for a class.
pub fn action(class: Class) -> &'static EntityUid {
    static ACTIONS: OnceLock<[EntityUid; 4]> = OnceLock::new();
    let all = ACTIONS.get_or_init(|| Class::ALL.map(|c| uid("Action", c.action())));
    &all[class as usize]
}
