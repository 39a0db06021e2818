//! The inventory check the `inventory_parse` fuzz target runs (and `cargo test`, over a few
//! inputs): any text as an inventory document, from a file or an inventory service's answer.
//! Fails on a panic, on a parse that differs between two runs, and on an entry in force that the
//! document does not support exactly:
//!
//! - every Device in force is listed once, under an EUI-64, with `kind` its `deviceType` read by
//!   [`DeviceType::of_inventory`], and linked to at least one meter point;
//! - every meter point it is linked to is listed once, usable (13-digit MPAN for electricity with
//!   no gas supplier, 6 to 11-digit MPRN for gas with no import or export supplier, no empty
//!   Party), and is exactly what the document says;
//! - an identifier listed twice (a Device or a meter point) is in force nowhere: two descriptions
//!   of one thing are trusted for neither.

use std::collections::HashMap;

use serde_json::Value;

use super::{Fuel, Inventory};
use crate::model::{DeviceType, Eui64};

/// Runs one input; panics on a violation.
pub fn fuzz_check(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let first = Inventory::parse(text);
    let again = Inventory::parse(text);
    let (inventory, _) = match (first, again) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.0.len(), b.0.len(), "two parses differ");
            a
        }
        (Err(a), Err(b)) => {
            assert_eq!(a.to_string(), b.to_string(), "two parses differ");
            return;
        }
        _ => panic!("two parses differ"),
    };
    if inventory.is_empty() {
        return;
    }
    let doc: Value = serde_json::from_str(text).expect("an inventory in force is JSON");
    let listed = |key: &str| doc.get(key).and_then(Value::as_array).cloned().unwrap_or_default();
    let meter_points = listed("meterPoints");
    let devices = listed("devices");
    let mut mpxn_count: HashMap<&str, usize> = HashMap::new();
    for mp in &meter_points {
        if let Some(mpxn) = mp.get("mpxn").and_then(Value::as_str) {
            *mpxn_count.entry(mpxn).or_default() += 1;
        }
    }
    let mut device_entries: HashMap<Eui64, Vec<&Value>> = HashMap::new();
    for d in &devices {
        if let Some(id) = d
            .get("deviceId")
            .and_then(Value::as_str)
            .and_then(|s| Eui64::parse(s).ok())
        {
            device_entries.entry(id).or_default().push(d);
        }
    }
    for entry in inventory.devices() {
        let listed = device_entries.get(&entry.device_id).map_or(&[][..], Vec::as_slice);
        assert_eq!(
            listed.len(),
            1,
            "{} in force but listed {} times",
            entry.device_id,
            listed.len()
        );
        let raw = listed[0];
        assert_eq!(raw.get("deviceType").and_then(Value::as_str), Some(&*entry.device_type));
        assert_eq!(entry.kind, DeviceType::of_inventory(&entry.device_type));
        assert!(
            !entry.meter_points.is_empty(),
            "{} in force with no meter point",
            entry.device_id
        );
        let linked: Vec<&str> = raw
            .get("mpxns")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for mp in &entry.meter_points {
            assert!(
                linked.contains(&mp.mpxn.as_str()),
                "{} linked to an unlisted mpxn",
                entry.device_id
            );
            assert_eq!(
                mpxn_count.get(mp.mpxn.as_str()),
                Some(&1),
                "an mpxn listed twice is in force"
            );
            let raw_mp = meter_points
                .iter()
                .find(|m| m.get("mpxn").and_then(Value::as_str) == Some(&mp.mpxn))
                .expect("listed once");
            let party = |k: &str| raw_mp.get(k).and_then(Value::as_str).map(str::to_owned);
            assert_eq!(mp.import_supplier, party("importSupplier"));
            assert_eq!(mp.export_supplier, party("exportSupplier"));
            assert_eq!(mp.gas_supplier, party("gasSupplier"));
            assert_eq!(mp.network_operator, party("networkOperator"));
            let digits = mp.mpxn.bytes().all(|b| b.is_ascii_digit());
            match mp.fuel {
                Fuel::Electricity => {
                    assert_eq!(raw_mp.get("fuel"), Some(&Value::from("electricity")));
                    assert!(digits && mp.mpxn.len() == 13 && mp.gas_supplier.is_none());
                }
                Fuel::Gas => {
                    assert_eq!(raw_mp.get("fuel"), Some(&Value::from("gas")));
                    assert!(digits && (6..=11).contains(&mp.mpxn.len()));
                    assert!(mp.import_supplier.is_none() && mp.export_supplier.is_none());
                }
            }
            for p in [
                &mp.import_supplier,
                &mp.export_supplier,
                &mp.gas_supplier,
                &mp.network_operator,
            ]
            .into_iter()
            .flatten()
            {
                assert!(!p.is_empty(), "an empty Party in force");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_passes_the_sample_and_its_mutations() {
        let sample = std::fs::read("tests/data/inventory.json").expect("the shipped sample");
        fuzz_check(&sample);
        let text = String::from_utf8(sample).unwrap();
        // A Device listed twice, a meter point listed twice: both must leave force.
        let doubled = text.replacen(
            "\"devices\": [",
            "\"devices\": [{\"deviceId\":\"00-DB-00-00-00-00-01-03\",\"deviceType\":\"ESME\",\"mpxns\":[]},",
            1,
        );
        fuzz_check(doubled.as_bytes());
        let id = Eui64::parse("00-DB-00-00-00-00-01-03").unwrap();
        assert!(Inventory::parse(&text).unwrap().0.get(id).is_some());
        assert!(Inventory::parse(&doubled).unwrap().0.get(id).is_none());
        for cut in (0..text.len()).step_by(997) {
            fuzz_check(&text.as_bytes()[..cut]);
        }
    }
}
