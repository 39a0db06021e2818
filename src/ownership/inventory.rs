//! The inventory file of docs/contract.md §2: parsing, validation and the Device index.
//!
//! A file that is not the expected shape is an error (the caller keeps its last good inventory).
//! A single entry that is wrong is reported and left out, and so is every Device that depends on
//! it: an unusable entry means no owners, never a guess.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{DeviceEntry, Fuel, MeterPoint};
use crate::model::Eui64;

/// The whole file could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InventoryError(String);

/// One entry was left out, and why. Inventory data is registration data, not SAT data, so
/// naming the entry in logs is fine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryWarning {
    pub entry: String,
    pub reason: String,
}

impl fmt::Display for InventoryWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} left out: {}", self.entry, self.reason)
    }
}

/// An indexed, validated inventory.
#[derive(Debug, Default, Clone)]
pub struct Inventory {
    devices: HashMap<Eui64, Arc<DeviceEntry>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileShape<'a> {
    #[serde(borrow)]
    meter_points: Vec<&'a RawValue>,
    #[serde(borrow)]
    devices: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MeterPointShape {
    mpxn: String,
    fuel: String,
    #[serde(default)]
    import_supplier: Option<String>,
    #[serde(default)]
    export_supplier: Option<String>,
    #[serde(default)]
    gas_supplier: Option<String>,
    #[serde(default)]
    network_operator: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DeviceShape {
    device_id: String,
    device_type: String,
    mpxns: Vec<String>,
}

/// An inventory read from a file, with the warnings of entries left out.
#[derive(Debug)]
pub struct Read {
    pub inventory: Arc<Inventory>,
    pub warnings: Vec<String>,
}

impl Inventory {
    /// Reads and parses an inventory file; errors name the file.
    pub fn read(path: &std::path::Path) -> Result<Read, InventoryError> {
        let named = |e: &dyn std::fmt::Display| InventoryError(format!("{}: {e}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| named(&e))?;
        let (inventory, warnings) = Self::parse(&text).map_err(|e| named(&e))?;
        Ok(Read {
            inventory: Arc::new(inventory),
            warnings: warnings.iter().map(ToString::to_string).collect(),
        })
    }

    /// Parses and validates an inventory document. Entry-level problems come back as warnings.
    pub fn parse(text: &str) -> Result<(Self, Vec<InventoryWarning>), InventoryError> {
        let shape: FileShape<'_> = serde_json::from_str(text).map_err(|e| {
            InventoryError(format!(
                "inventory is not usable: expected {{\"meterPoints\":[...],\"devices\":[...]}}: {e}"
            ))
        })?;
        let mut warnings = Vec::new();
        let meter_points = index_meter_points(&shape.meter_points, &mut warnings);
        let devices = index_devices(&shape.devices, &meter_points, &mut warnings);
        Ok((Self { devices }, warnings))
    }

    /// The entry for a Device, or `None` when the inventory does not know it or could not use it.
    pub fn get(&self, device: Eui64) -> Option<&Arc<DeviceEntry>> {
        self.devices.get(&device)
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Builds an inventory from entries already validated elsewhere (tests, generators).
    pub fn from_entries(entries: impl IntoIterator<Item = DeviceEntry>) -> Self {
        let devices = entries.into_iter().map(|d| (d.device_id, Arc::new(d))).collect();
        Self { devices }
    }

    pub fn devices(&self) -> impl Iterator<Item = &Arc<DeviceEntry>> {
        self.devices.values()
    }
}

fn index_meter_points(raw: &[&RawValue], warnings: &mut Vec<InventoryWarning>) -> HashMap<String, Arc<MeterPoint>> {
    let mut points = HashMap::new();
    let mut duplicates = HashSet::new();
    let mut unusable = HashSet::new();
    for (i, raw) in raw.iter().enumerate() {
        let entry = format!("meterPoints[{i}]");
        let mp = match serde_json::from_str::<MeterPointShape>(raw.get())
            .map_err(|e| e.to_string())
            .and_then(validate_meter_point)
        {
            Ok(mp) => mp,
            Err(reason) => {
                warnings.push(InventoryWarning { entry, reason });
                unusable.extend(claimed_ids(raw, "mpxn"));
                continue;
            }
        };
        if points.contains_key(&mp.mpxn) || duplicates.contains(&mp.mpxn) {
            // Two descriptions of one meter point: trust neither.
            warnings.push(InventoryWarning {
                entry: format!("{entry} ({})", mp.mpxn),
                reason: "mpxn listed more than once; every entry for it is left out".into(),
            });
            points.remove(&mp.mpxn);
            duplicates.insert(mp.mpxn);
            continue;
        }
        points.insert(mp.mpxn.clone(), Arc::new(mp));
    }
    for mpxn in unusable {
        if points.remove(&mpxn).is_some() {
            warnings.push(InventoryWarning {
                entry: format!("meterPoints ({mpxn})"),
                reason: "mpxn also has an unusable entry; every entry for it is left out".into(),
            });
        }
    }
    points
}

fn validate_meter_point(s: MeterPointShape) -> Result<MeterPoint, String> {
    let fuel = match s.fuel.as_str() {
        "electricity" => Fuel::Electricity,
        "gas" => Fuel::Gas,
        other => return Err(format!("unknown fuel {other:?}")),
    };
    match fuel {
        Fuel::Electricity => {
            check_mpan(&s.mpxn)?;
            if s.gas_supplier.is_some() {
                return Err("gasSupplier on an electricity meter point".into());
            }
        }
        Fuel::Gas => {
            check_mprn(&s.mpxn)?;
            if s.import_supplier.is_some() || s.export_supplier.is_some() {
                return Err("importSupplier/exportSupplier on a gas meter point".into());
            }
        }
    }
    for party in [
        &s.import_supplier,
        &s.export_supplier,
        &s.gas_supplier,
        &s.network_operator,
    ]
    .into_iter()
    .flatten()
    {
        if party.is_empty() {
            return Err("empty party id".into());
        }
    }
    Ok(MeterPoint {
        mpxn: s.mpxn,
        fuel,
        import_supplier: s.import_supplier,
        export_supplier: s.export_supplier,
        gas_supplier: s.gas_supplier,
        network_operator: s.network_operator,
    })
}

/// MPAN core: 13 digits. The check digit is not enforced: docs/contract.md §2's own example
/// (`1012345678901`) fails it, and a wrong check digit cannot widen anything.
fn check_mpan(mpan: &str) -> Result<(), String> {
    if mpan.len() == 13 && mpan.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(format!("MPAN {mpan:?} is not 13 digits"))
    }
}

/// MPRN: 6 to 11 digits (sources differ on the upper bound).
fn check_mprn(mprn: &str) -> Result<(), String> {
    if (6..=11).contains(&mprn.len()) && mprn.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(format!("MPRN {mprn:?} is not 6 to 11 digits"))
    }
}

fn index_devices(
    raw: &[&RawValue],
    points: &HashMap<String, Arc<MeterPoint>>,
    warnings: &mut Vec<InventoryWarning>,
) -> HashMap<Eui64, Arc<DeviceEntry>> {
    let mut devices = HashMap::new();
    let mut duplicates = HashSet::new();
    let mut unusable = HashSet::new();
    for (i, raw) in raw.iter().enumerate() {
        let entry = format!("devices[{i}]");
        let device = match serde_json::from_str::<DeviceShape>(raw.get())
            .map_err(|e| e.to_string())
            .and_then(|s| validate_device(s, points))
        {
            Ok(d) => d,
            Err(reason) => {
                warnings.push(InventoryWarning { entry, reason });
                unusable.extend(
                    claimed_ids(raw, "deviceId")
                        .iter()
                        .filter_map(|id| Eui64::parse(id).ok()),
                );
                continue;
            }
        };
        let id = device.device_id;
        if devices.contains_key(&id) || duplicates.contains(&id) {
            warnings.push(InventoryWarning {
                entry: format!("{entry} ({id})"),
                reason: "deviceId listed more than once; every entry for it is left out".into(),
            });
            devices.remove(&id);
            duplicates.insert(id);
            continue;
        }
        devices.insert(id, Arc::new(device));
    }
    for id in unusable {
        if devices.remove(&id).is_some() {
            warnings.push(InventoryWarning {
                entry: format!("devices ({id})"),
                reason: "deviceId also has an unusable entry; every entry for it is left out".into(),
            });
        }
    }
    devices
}

/// The string values of `key` at the top level of an entry that failed validation: the ids it
/// meant to describe. A broken second description of a meter point or Device makes the first
/// one doubtful too, exactly like a duplicate, so neither is used.
fn claimed_ids(raw: &RawValue, key: &'static str) -> Vec<String> {
    struct Claimed(&'static str);
    impl<'de> serde::de::Visitor<'de> for Claimed {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
            let mut ids = Vec::new();
            // Every occurrence, so an entry with the key twice claims both values.
            #[derive(Deserialize)]
            #[serde(untagged)]
            enum Id {
                Text(String),
                Other(serde::de::IgnoredAny),
            }
            while let Some(k) = map.next_key::<String>()? {
                if k != self.0 {
                    map.next_value::<serde::de::IgnoredAny>()?;
                } else if let Id::Text(id) = map.next_value::<Id>()? {
                    ids.push(id);
                }
            }
            Ok(ids)
        }
    }
    let mut de = serde_json::Deserializer::from_str(raw.get());
    serde::Deserializer::deserialize_map(&mut de, Claimed(key)).unwrap_or_default()
}

fn validate_device(s: DeviceShape, points: &HashMap<String, Arc<MeterPoint>>) -> Result<DeviceEntry, String> {
    let device_id = Eui64::parse(&s.device_id).map_err(|e| format!("deviceId: {e}"))?;
    if s.device_type.is_empty() || s.device_type.len() > 32 {
        return Err("deviceType must be 1 to 32 characters".into());
    }
    if s.mpxns.is_empty() {
        return Err("mpxns is empty".into());
    }
    let mut meter_points = Vec::with_capacity(s.mpxns.len());
    for mpxn in &s.mpxns {
        match points.get(mpxn) {
            Some(mp) => meter_points.push(Arc::clone(mp)),
            None => return Err(format!("mpxn {mpxn:?} is not a usable meter point")),
        }
    }
    Ok(DeviceEntry {
        device_id,
        kind: crate::model::DeviceType::of_inventory(&s.device_type),
        device_type: s.device_type.into(),
        meter_points,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ownership::PartyRegistration as R;

    const SAMPLE: &str = r#"{"meterPoints":[
       {"mpxn":"1012345678901","fuel":"electricity","importSupplier":"SUPA","exportSupplier":null,"networkOperator":"DNO1"},
       {"mpxn":"1234567890","fuel":"gas","gasSupplier":"SUPB","networkOperator":"GT1"}],
     "devices":[
       {"deviceId":"00-DB-12-34-56-78-90-A0","deviceType":"ESME","mpxns":["1012345678901"]},
       {"deviceId":"00-db-12-34-56-78-90-b1","deviceType":"CHF","mpxns":["1012345678901","1234567890"]}]}"#;

    fn id(s: &str) -> Eui64 {
        Eui64::parse(s).unwrap()
    }

    #[test]
    fn contract_sample_parses_and_indexes_case_insensitively() {
        let (inv, warnings) = Inventory::parse(SAMPLE).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(inv.len(), 2);
        let chf = inv.get(id("00-DB-12-34-56-78-90-B1")).unwrap();
        assert_eq!(&*chf.device_type, "CHF");
        assert_eq!(chf.meter_points.len(), 2);
        assert!(inv.get(id("00-DB-12-34-56-78-90-A0")).is_some());
        assert!(inv.get(id("00-DB-12-34-56-78-90-A1")).is_none());
    }

    #[test]
    fn chf_on_two_meter_points_registers_each_party_by_fuel() {
        let (inv, _) = Inventory::parse(SAMPLE).unwrap();
        let chf = inv.get(id("00-DB-12-34-56-78-90-B1")).unwrap();
        assert_eq!(chf.registration_of("SUPA"), R::IMPORT_SUPPLIER);
        assert_eq!(chf.registration_of("SUPB"), R::GAS_SUPPLIER);
        assert_eq!(chf.registration_of("DNO1"), R::ELECTRICITY_NETWORK_OPERATOR);
        assert_eq!(chf.registration_of("GT1"), R::GAS_NETWORK_OPERATOR);
        assert_eq!(chf.registration_of("supa"), R::NONE, "party ids are exact");
        let esme = inv.get(id("00-DB-12-34-56-78-90-A0")).unwrap();
        assert_eq!(esme.registration_of("SUPB"), R::NONE);
    }

    #[test]
    fn bad_entries_are_left_out_with_the_devices_that_need_them() {
        let text = r#"{"meterPoints":[
           {"mpxn":"101234567890","fuel":"electricity","importSupplier":"SUPA"},
           {"mpxn":"1234567890","fuel":"water","gasSupplier":"SUPB"},
           {"mpxn":"123456","fuel":"gas","gasSupplier":"SUPB","importSupplier":"X"},
           {"mpxn":"7654321","fuel":"gas","gasSupplier":"SUPB","colour":"red"},
           {"mpxn":"1111111","fuel":"gas","gasSupplier":"A"},
           {"mpxn":"1111111","fuel":"gas","gasSupplier":"B"},
           {"mpxn":"2222222","fuel":"gas","gasSupplier":"C"}],
         "devices":[
           {"deviceId":"00-00-00-00-00-00-00-01","deviceType":"ESME","mpxns":["101234567890"]},
           {"deviceId":"00-00-00-00-00-00-00-02","deviceType":"GSME","mpxns":["1111111"]},
           {"deviceId":"not-an-eui","deviceType":"GSME","mpxns":["2222222"]},
           {"deviceId":"00-00-00-00-00-00-00-03","deviceType":"GSME","mpxns":[]},
           {"deviceId":"00-00-00-00-00-00-00-04","deviceType":"GSME","mpxns":["2222222"]},
           {"deviceId":"00-00-00-00-00-00-00-04","deviceType":"GPF","mpxns":["2222222"]},
           {"deviceId":"00-00-00-00-00-00-00-05","deviceType":"GSME","mpxns":["2222222"],"deviceType":"X"},
           {"deviceId":"00-00-00-00-00-00-00-06","deviceType":"GSME","mpxns":["2222222"]}]}"#;
        let (inv, warnings) = Inventory::parse(text).unwrap();
        let text = warnings.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n");
        assert!(text.contains("not 13 digits"), "{text}");
        assert!(text.contains("unknown fuel"), "{text}");
        assert!(text.contains("importSupplier/exportSupplier on a gas"), "{text}");
        assert!(text.contains("colour"), "{text}");
        assert!(text.contains("listed more than once"), "{text}");
        assert!(text.contains("duplicate field"), "{text}");
        for n in 1..=5u64 {
            assert!(inv.get(Eui64::from_u64(n)).is_none(), "device {n} should be left out");
        }
        assert!(inv.get(Eui64::from_u64(6)).is_some());
        assert_eq!(inv.len(), 1);
    }

    #[test]
    fn a_broken_second_entry_for_an_id_leaves_out_the_good_one_too() {
        // Old and new descriptions of one meter point and one Device, the second unusable (an
        // electricity point with a gas supplier; an unknown field), in either order.
        let mp_good = r#"{"mpxn":"1012345678901","fuel":"electricity","importSupplier":"OLD"}"#;
        let mp_bad = r#"{"mpxn":"1012345678901","fuel":"electricity","importSupplier":"NEW","gasSupplier":"X"}"#;
        let dev_good = r#"{"deviceId":"00-00-00-00-00-00-00-07","deviceType":"GSME","mpxns":["2222222"]}"#;
        let dev_bad = r#"{"deviceId":"00-00-00-00-00-00-00-07","deviceType":"GSME","mpxns":["2222222"],"x":1}"#;
        let gas = r#"{"mpxn":"2222222","fuel":"gas","gasSupplier":"C"}"#;
        let esme = r#"{"deviceId":"00-00-00-00-00-00-00-08","deviceType":"ESME","mpxns":["1012345678901"]}"#;
        for (mps, devs) in [
            ([mp_good, mp_bad], [dev_good, dev_bad]),
            ([mp_bad, mp_good], [dev_bad, dev_good]),
        ] {
            let text = format!(
                r#"{{"meterPoints":[{},{},{gas}],"devices":[{},{},{esme}]}}"#,
                mps[0], mps[1], devs[0], devs[1]
            );
            let (inv, warnings) = Inventory::parse(&text).unwrap();
            assert!(inv.get(Eui64::from_u64(7)).is_none(), "{warnings:?}");
            assert!(
                inv.get(Eui64::from_u64(8)).is_none(),
                "its meter point is doubtful: {warnings:?}"
            );
            assert!(warnings.iter().any(|w| w.reason.contains("also has an unusable entry")));
        }
        // However odd the broken entry's other values are, its id is still found.
        let odd = r#"{"mpxn":"1012345678901","fuel":{"$serde_json::private::RawValue":"x"}}"#;
        let text = format!(r#"{{"meterPoints":[{mp_good},{odd}],"devices":[{esme}]}}"#);
        let (inv, warnings) = Inventory::parse(&text).unwrap();
        assert!(inv.get(Eui64::from_u64(8)).is_none(), "{warnings:?}");
    }

    #[test]
    fn wrong_shape_is_an_error() {
        for text in [
            "",
            "[]",
            r#"{"devices":[]}"#,
            r#"{"meterPoints":[],"devices":{}}"#,
            "{\"meterPoints\":[],\"devices\":[],\"x\":1}",
        ] {
            assert!(Inventory::parse(text).is_err(), "{text:?} accepted");
        }
    }

    #[test]
    fn mpan_and_mprn_formats() {
        assert!(check_mpan("1012345678901").is_ok());
        assert!(check_mpan("101234567890").is_err());
        assert!(check_mpan("10123456789O1").is_err());
        assert!(check_mprn("123456").is_ok());
        assert!(check_mprn("12345").is_err());
        assert!(check_mprn("123456789012").is_err());
    }
}
