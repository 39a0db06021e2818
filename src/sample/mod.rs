//! Generated sample data: a small GB market (Parties, Users in all seven roles, meter points,
//! HAN and non-HAN Devices) and SAT records drawn from the real DUIS SRV catalogue.
//!
//! A development aid for the demo upstream, benchmarks and tests. The sidecar's request path
//! never uses it.

pub mod inventory_service;
pub mod upstream;

use std::fmt::Write as _;
use std::sync::OnceLock;

use serde_json::json;

use crate::model::{Eui64, MessageType, Principal, Role};
use crate::ownership::Inventory;

/// One DUIS Service Request Variant.
#[derive(Debug, Clone)]
pub struct Srv {
    pub id: &'static str,
    pub title: &'static str,
    pub roles: Vec<Role>,
    pub non_device: bool,
}

/// All 129 SRVs of DUIS 5.4.
pub fn catalogue() -> &'static [Srv] {
    static CATALOGUE: OnceLock<Vec<Srv>> = OnceLock::new();
    CATALOGUE.get_or_init(|| {
        include_str!("srv-catalogue.tsv")
            .lines()
            .skip(1)
            .filter_map(|line| {
                let mut cols = line.split('\t');
                let (id, title, roles, _critical, non_device) =
                    (cols.next()?, cols.next()?, cols.next()?, cols.next()?, cols.next()?);
                let roles = roles.split(',').filter_map(|r| r.trim().parse().ok()).collect();
                Some(Srv {
                    id,
                    title,
                    roles,
                    non_device: non_device.trim() == "Yes",
                })
            })
            .collect()
    })
}

/// A small deterministic generator (splitmix64): samples are reproducible from a seed.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// A named User of the sample market.
#[derive(Debug, Clone)]
pub struct SampleUser {
    pub name: &'static str,
    pub principal: Principal,
}

/// A sample Device with the Users that own it now, for picking realistic senders.
#[derive(Debug, Clone)]
pub struct SampleDevice {
    pub id: Eui64,
    pub device_type: &'static str,
    pub owners: Vec<usize>,
}

/// A generated market: Users, an inventory, and the Devices in it (plus a few it does not know).
#[derive(Debug, Clone)]
pub struct Market {
    pub users: Vec<SampleUser>,
    pub devices: Vec<SampleDevice>,
    pub inventory_json: String,
}

const USERS: &[(&str, Role, &str)] = &[
    ("Supplier A, import", Role::ImportSupplier, "SUPA"),
    ("Supplier A, gas", Role::GasSupplier, "SUPA"),
    ("Supplier A, export", Role::ExportSupplier, "SUPA"),
    ("Supplier B, import", Role::ImportSupplier, "SUPB"),
    ("Supplier B, gas", Role::GasSupplier, "SUPB"),
    ("Supplier C, export", Role::ExportSupplier, "SUPC"),
    ("Network operator DNO1", Role::ElectricityDistributor, "DNO1"),
    ("Network operator DNO2", Role::ElectricityDistributor, "DNO2"),
    ("Gas transporter GT1", Role::GasTransporter, "GT1"),
    ("Supplier agent", Role::RegisteredSupplierAgent, "AGENT1"),
    ("Other user", Role::OtherUser, "OTHER1"),
];

const ALERTS_DCC: &[&str] = &["N1", "N12", "N24", "N42", "AD1"];
const ALERTS_DEVICE: &[&str] = &["0x8F35", "0x8F3E", "0x8F1C", "0x8099"];
const RESPONSES: &[&str] = &["I0", "I0", "I0", "E4", "E19", "E20", "E21"];
const B64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

impl Market {
    /// `premises` homes, each with an electricity meter point and most with gas too.
    pub fn generate(premises: usize, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let users: Vec<SampleUser> = USERS
            .iter()
            .enumerate()
            .map(|(i, &(name, role, party))| SampleUser {
                name,
                principal: Principal {
                    user_id: Eui64::from_u64(0x90B3_D51F_3001_0000 + i as u64),
                    role,
                    party: party.to_owned(),
                },
            })
            .collect();
        let user = |role: Role, party: &str| {
            users
                .iter()
                .position(|u| u.principal.role == role && u.principal.party == party)
        };

        let mut meter_points = Vec::new();
        let mut inventory_devices = Vec::new();
        let mut devices = Vec::new();
        for home in 0..premises {
            let mpan = mpan(home as u64);
            let supplier = *rng.pick(&["SUPA", "SUPB"]);
            let exporter = rng.chance(20).then(|| *rng.pick(&["SUPA", "SUPC"]));
            let dno = *rng.pick(&["DNO1", "DNO2"]);
            meter_points.push(json!({"mpxn": mpan, "fuel": "electricity", "importSupplier": supplier,
                "exportSupplier": exporter, "networkOperator": dno}));
            let mut elec_owners = vec![
                user(Role::ImportSupplier, supplier),
                user(Role::ElectricityDistributor, dno),
            ];
            if let Some(e) = exporter {
                elec_owners.push(user(Role::ExportSupplier, e));
            }
            let elec_owners: Vec<usize> = elec_owners.into_iter().flatten().collect();
            let gas = rng.chance(70).then(|| {
                let mprn = format!("{}", 1_000_000 + home);
                let gs = *rng.pick(&["SUPA", "SUPB"]);
                meter_points.push(json!({"mpxn": mprn, "fuel": "gas", "gasSupplier": gs, "networkOperator": "GT1"}));
                let owners = [user(Role::GasSupplier, gs), user(Role::GasTransporter, "GT1")];
                (mprn, owners.into_iter().flatten().collect::<Vec<_>>())
            });
            let base = 0x00DB_0000_0000_0000 + ((home as u64) << 8);
            let mut add = |n: u64, ty: &'static str, mpxns: Vec<String>, owners: Vec<usize>| {
                let id = Eui64::from_u64(base + n);
                inventory_devices.push(json!({"deviceId": id.to_string(), "deviceType": ty, "mpxns": mpxns}));
                devices.push(SampleDevice {
                    id,
                    device_type: ty,
                    owners,
                });
            };
            add(1, "ESME", vec![mpan.clone()], elec_owners.clone());
            add(2, "IHD", vec![mpan.clone()], elec_owners.clone());
            match &gas {
                Some((mprn, gas_owners)) => {
                    let both = [elec_owners.clone(), gas_owners.clone()].concat();
                    add(3, "CHF", vec![mpan.clone(), mprn.clone()], both);
                    add(4, "GSME", vec![mprn.clone()], gas_owners.clone());
                    add(5, "GPF", vec![mprn.clone()], gas_owners.clone());
                }
                None => add(3, "CHF", vec![mpan.clone()], elec_owners.clone()),
            }
            if rng.chance(10) {
                add(6, "SMETS1", vec![mpan.clone()], elec_owners.clone());
            }
            if rng.chance(5) {
                // Installed but not yet in the inventory: nobody but the sender sees it.
                devices.push(SampleDevice {
                    id: Eui64::from_u64(base + 7),
                    device_type: "PPMID",
                    owners: vec![],
                });
            }
        }
        let inventory_json = serde_json::to_string_pretty(&json!({
            "meterPoints": meter_points,
            "devices": inventory_devices,
        }))
        .unwrap_or_default();
        Self {
            users,
            devices,
            inventory_json,
        }
    }

    /// The inventory, parsed as satgate parses it.
    pub fn inventory(&self) -> Inventory {
        Inventory::parse(&self.inventory_json)
            .map(|(i, _)| i)
            .unwrap_or_default()
    }

    /// One SAT record line (without `\n`), about 1.2 KB with its 800-character payload. Record
    /// `n` is 1,201 s after record `n - 1` from 2026-11-01, so 2,000 records cover four weeks.
    pub fn record(&self, rng: &mut Rng, n: u64) -> String {
        let device = rng.chance(95).then(|| rng.pick(&self.devices));
        self.record_about(rng, n, device, n * 1201)
    }

    /// `count` records about one Device on one day of November 2026 (numbered from `first`): a
    /// Device behaving erratically, for the activity view to find.
    pub fn burst(&self, device: &SampleDevice, day: u64, count: u64, first: u64, seed: u64) -> String {
        let mut rng = Rng::new(seed);
        let mut out = String::new();
        for i in 0..count {
            let at = (day - 1) * 86_400 + 6 * 3600 + i * 97 % 43_200;
            out.push_str(&self.record_about(&mut rng, first + i, Some(device), at));
            out.push('\n');
        }
        out
    }

    /// One record about `device` (or none), `at` seconds after 2026-11-01T00:00:00Z (wrapping
    /// within November's first 28 days).
    fn record_about(&self, rng: &mut Rng, n: u64, device: Option<&SampleDevice>, at: u64) -> String {
        let srvs = catalogue();
        // Mostly the Device's own Users; sometimes anybody (a former supplier, an agent, ...).
        let user_idx = match device {
            Some(d) if !d.owners.is_empty() && rng.chance(80) => *rng.pick(&d.owners),
            _ => rng.below(self.users.len()),
        };
        let user = &self.users[user_idx].principal;
        let eligible: Vec<&Srv> = srvs
            .iter()
            .filter(|s| s.roles.contains(&user.role) && s.non_device == device.is_none())
            .collect();
        let srv = if eligible.is_empty() {
            rng.pick(srvs)
        } else {
            *rng.pick(&eligible)
        };
        let message_type = *rng.pick(&[
            MessageType::ServiceRequest,
            MessageType::ServiceRequest,
            MessageType::Acknowledgement,
            MessageType::ServiceResponse,
            MessageType::ServiceResponse,
            MessageType::DeviceAlert,
            MessageType::DccAlert,
            MessageType::PreCommand,
            MessageType::SignedPreCommand,
        ]);
        let (srv_id, title, alert, response) = match message_type {
            MessageType::DeviceAlert => (None, None, Some(*rng.pick(ALERTS_DEVICE)), None),
            MessageType::DccAlert => (None, None, Some(*rng.pick(ALERTS_DCC)), None),
            MessageType::ServiceResponse => (Some(srv.id), Some(srv.title), None, Some(*rng.pick(RESPONSES))),
            MessageType::Acknowledgement => (Some(srv.id), Some(srv.title), None, Some("I99")),
            _ => (Some(srv.id), Some(srv.title), None, None),
        };
        let target = device.map_or_else(|| "00-00-00-00-00-00-00-00".to_owned(), |d| d.id.to_string());
        let mut payload = String::with_capacity(800);
        for _ in 0..800 {
            payload.push(B64[rng.below(64)] as char);
        }
        let fields = [
            ("recordId", json!(format!("r-{n:07}"))),
            (
                "timestamp",
                json!(format!(
                    "2026-11-{:02}T{:02}:{:02}:{:02}Z",
                    1 + at / 86_400 % 28,
                    at / 3600 % 24,
                    at / 60 % 60,
                    at % 60
                )),
            ),
            ("messageType", json!(message_type.as_str())),
            ("srv", json!(srv_id)),
            ("srvTitle", json!(title)),
            ("alertCode", json!(alert)),
            ("responseCode", json!(response)),
            ("deviceId", json!(device.map(|d| d.id.to_string()))),
            ("deviceType", json!(device.map(|d| d.device_type))),
            ("userId", json!(user.user_id.to_string())),
            ("userRole", json!(user.role.as_str())),
            ("requestId", json!(format!("{}:{target}:{}", user.user_id, 1000 + n))),
            (
                "metadata",
                json!({"commandVariant": 1 + rng.below(8), "transport": *rng.pick(&["WAN", "HAN"])}),
            ),
            ("payload", json!(payload)),
        ];
        let mut line = String::with_capacity(1300);
        line.push('{');
        for (i, (k, v)) in fields.iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            let _ = write!(line, "{sep}\"{k}\":{v}");
        }
        line.push('}');
        line
    }

    /// `count` records as NDJSON.
    pub fn ndjson(&self, count: u64, seed: u64) -> String {
        let mut rng = Rng::new(seed);
        let mut out = String::new();
        for n in 0..count {
            out.push_str(&self.record(&mut rng, n));
            out.push('\n');
        }
        out
    }
}

/// A 13-digit MPAN core with a valid check digit, distinct per `n`.
fn mpan(n: u64) -> String {
    const WEIGHTS: [u64; 12] = [3, 5, 7, 13, 17, 19, 23, 29, 31, 37, 41, 43];
    let body = format!("{:012}", 100_000_000_000 + n);
    let sum: u64 = body.bytes().zip(WEIGHTS).map(|(d, w)| u64::from(d - b'0') * w).sum();
    format!("{body}{}", sum % 11 % 10)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stream::Record;

    #[test]
    fn catalogue_has_all_129_srvs_with_roles() {
        let c = catalogue();
        assert_eq!(c.len(), 129);
        // 7.16, 8.5 and 8.6 list no eligible User Role in DUIS 5.4.
        assert_eq!(c.iter().filter(|s| s.roles.is_empty()).count(), 3);
        assert_eq!(c[0].id, "1.1.1");
    }

    #[test]
    fn generated_records_parse_and_inventory_is_clean() {
        let m = Market::generate(20, 7);
        let (inv, warnings) = Inventory::parse(&m.inventory_json).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(inv.len() >= 60);
        let mut rng = Rng::new(1);
        for n in 0..500 {
            let line = m.record(&mut rng, n);
            Record::parse(line.as_bytes()).unwrap_or_else(|e| panic!("{e}: {line}"));
        }
    }
}
