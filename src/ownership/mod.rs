//! Ownership at request time: which Parties are registered, in which roles, on the meter points a
//! Device is linked to, and what type the inventory says the Device is.
//!
//! A source answers for one Device at a time: known (with its entry), unknown, or an error. Every
//! caller treats unknown and error alike when deciding: no Device, so no owners (fail closed).

mod cache;
mod file;
pub mod fuzz;
mod http;
mod inventory;
mod open;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use cache::{CacheSettings, CachedSource, OwnershipStats};
pub use file::InventoryFile;
pub use http::{HttpSettings, HttpSource};
pub use inventory::{Inventory, InventoryError, InventoryWarning, Read as InventoryRead};
pub use open::{OpenError, Opened, SourceConfig};

use crate::model::{DeviceType, Eui64};

/// Fuel of a meter point.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Fuel {
    Electricity,
    Gas,
}

/// One meter point and the Parties registered on it now.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct MeterPoint {
    pub mpxn: String,
    pub fuel: Fuel,
    pub import_supplier: Option<String>,
    pub export_supplier: Option<String>,
    pub gas_supplier: Option<String>,
    pub network_operator: Option<String>,
}

/// A Device as the inventory describes it now.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DeviceEntry {
    pub device_id: Eui64,
    /// The inventory's DUIS DeviceType, as written (for people: logs, `explain`).
    pub device_type: Arc<str>,
    /// The same, as policies see it ([`DeviceType::of_inventory`]), closed over once at load so
    /// the record path does not parse it again. Whether it is in scope is the policy's call.
    pub kind: DeviceType,
    pub meter_points: Vec<Arc<MeterPoint>>,
}

impl DeviceEntry {
    /// How `party` is registered on the meter points this Device is linked to. This is a join
    /// over the inventory, not a visibility rule: which registration counts for which role is
    /// written in the policies.
    pub fn registration_of(&self, party: &str) -> PartyRegistration {
        let mut r = PartyRegistration::NONE;
        let is = |p: &Option<String>| p.as_deref() == Some(party);
        for mp in &self.meter_points {
            match mp.fuel {
                Fuel::Electricity => {
                    r.set(PartyRegistration::IMPORT_SUPPLIER, is(&mp.import_supplier));
                    r.set(PartyRegistration::EXPORT_SUPPLIER, is(&mp.export_supplier));
                    r.set(
                        PartyRegistration::ELECTRICITY_NETWORK_OPERATOR,
                        is(&mp.network_operator),
                    );
                }
                Fuel::Gas => {
                    r.set(PartyRegistration::GAS_SUPPLIER, is(&mp.gas_supplier));
                    r.set(PartyRegistration::GAS_NETWORK_OPERATOR, is(&mp.network_operator));
                }
            }
        }
        r
    }
}

/// The schema's `PartyRegistration`: one bit per (fuel, registered role) pair.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, Debug)]
pub struct PartyRegistration(u8);

impl PartyRegistration {
    pub const NONE: Self = Self(0);
    pub const IMPORT_SUPPLIER: Self = Self(1);
    pub const EXPORT_SUPPLIER: Self = Self(2);
    pub const GAS_SUPPLIER: Self = Self(4);
    pub const ELECTRICITY_NETWORK_OPERATOR: Self = Self(8);
    pub const GAS_NETWORK_OPERATOR: Self = Self(16);

    /// Every flag with its schema attribute name, in schema order.
    pub const FLAGS: [(Self, &'static str); 5] = [
        (Self::IMPORT_SUPPLIER, "importSupplier"),
        (Self::EXPORT_SUPPLIER, "exportSupplier"),
        (Self::GAS_SUPPLIER, "gasSupplier"),
        (Self::ELECTRICITY_NETWORK_OPERATOR, "electricityNetworkOperator"),
        (Self::GAS_NETWORK_OPERATOR, "gasNetworkOperator"),
    ];

    pub const fn from_bits(bits: u8) -> Self {
        Self(bits & 0b1_1111)
    }

    pub const fn bits(self) -> u8 {
        self.0
    }

    pub const fn contains(self, flag: Self) -> bool {
        self.0 & flag.0 == flag.0
    }

    fn set(&mut self, flag: Self, on: bool) {
        if on {
            self.0 |= flag.0;
        }
    }
}

/// Why a source could not answer for a Device.
#[derive(Debug, Clone, thiserror::Error)]
#[error("ownership source: {0}")]
pub struct SourceError(pub String);

/// What a source knows about one Device: `Ok(None)` is "unknown".
pub type LookupResult = Result<Option<Arc<DeviceEntry>>, SourceError>;

/// Anything that can say who owns a Device now. Boxed futures keep the trait object-safe so the
/// source is chosen by configuration.
pub trait OwnershipSource: Send + Sync {
    fn lookup(&self, device: Eui64) -> Pin<Box<dyn Future<Output = LookupResult> + Send + '_>>;
}

/// A fixed inventory answers at once.
impl OwnershipSource for Inventory {
    fn lookup(&self, device: Eui64) -> Pin<Box<dyn Future<Output = LookupResult> + Send + '_>> {
        let found = self.get(device).cloned();
        Box::pin(std::future::ready(Ok(found)))
    }
}
