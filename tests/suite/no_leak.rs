//! The no-leak properties, over random principals, inventories and record streams, through the
//! real policies in `policies/`:
//!
//! (a) no byte of the payload or metadata of a record whose User is not the principal appears in
//!     the output, and nothing at all of a malformed record;
//! (b) no unknown field, name or value, ever appears in the output;
//! (c) the output is exactly the contract oracle's: the same records, in order, with exactly the
//!     allowed fields, in contract order, byte-identical to the input.
//!
//! Cases: 2,000 by default (CI); set PROPTEST_CASES for more.

use proptest::prelude::*;
use satgate::model::Principal;
use satgate::ownership::Inventory;
use serde_json::{json, Value};

use crate::support::{cases, engine, oracle};

pub(crate) const ROLES: [&str; 7] = ["IS", "ES", "GS", "ED", "GT", "RSA", "OU"];
pub(crate) const PARTIES: [&str; 4] = ["SUPA", "SUPB", "DNO1", "GT1"];
const TYPES: [&str; 11] = [
    "ESME", "GSME", "CHF", "GPF", "PPMID", "HCALCS", "IHD", "CAD", "SMETS1", "esme", "OTHER",
];
const MESSAGES: [&str; 7] = [
    "ServiceRequest",
    "SignedPreCommand",
    "Acknowledgement",
    "PreCommand",
    "ServiceResponse",
    "DeviceAlert",
    "DCCAlert",
];

pub(crate) fn eui(kind: u8, i: usize, lower: bool) -> String {
    let s = format!("{kind:02X}-AB-CD-EF-00-00-00-{i:02X}");
    if lower {
        s.to_lowercase()
    } else {
        s
    }
}

#[derive(Debug, Clone)]
struct MeterPointSpec {
    gas: bool,
    supplier: Option<usize>,
    export: Option<usize>,
    operator: Option<usize>,
}

#[derive(Debug, Clone)]
struct DeviceSpec {
    ty: usize,
    links: Vec<usize>,
    in_inventory: bool,
}

#[derive(Debug, Clone)]
enum Corruption {
    DuplicatePayload,
    EscapedDuplicatePayload,
    WrongTypeSrv,
    BadUtf8,
    Truncated,
    NotAnObject,
}

/// The title fields the activity view counts: days, SRVs and codes that vary, with text a CSV
/// writer must quote or defuse.
#[derive(Debug, Clone)]
pub(crate) struct TitleSpec {
    /// Day of November 2026, or `None` for a timestamp that is not RFC 3339.
    day: Option<u32>,
    srv: Option<String>,
    title: Option<String>,
    alert: Option<String>,
    response: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct RecordSpec {
    user: usize,
    lower_user: bool,
    message: usize,
    device: Option<usize>,
    lower_device: bool,
    record_type: usize,
    token: String,
    metadata_depth: usize,
    optional_absent: Vec<bool>,
    unknown: Vec<String>,
    order_seed: u64,
    corruption: Option<Corruption>,
    titles: TitleSpec,
}

#[derive(Debug, Clone)]
pub(crate) struct Case {
    pub(crate) principal: (usize, usize, usize),
    meter_points: Vec<MeterPointSpec>,
    devices: Vec<DeviceSpec>,
    pub(crate) records: Vec<RecordSpec>,
}

const USERS: usize = 4;

fn meter_point() -> impl Strategy<Value = MeterPointSpec> {
    let party = || proptest::option::weighted(0.8, 0..PARTIES.len());
    (any::<bool>(), party(), party(), party()).prop_map(|(gas, supplier, export, operator)| MeterPointSpec {
        gas,
        supplier,
        export,
        operator,
    })
}

fn titles() -> impl Strategy<Value = TitleSpec> {
    // Short texts from an alphabet with every character CSV and spreadsheets care about.
    let text = || proptest::option::weighted(0.8, "[=+@'\\-\t\r\n,\" a-c0-2é]{0,6}");
    (
        proptest::option::weighted(0.95, 1u32..=28),
        proptest::option::weighted(0.9, prop_oneof!["4\\.1\\.[0-9]", "[=+@-][0-9]"]),
        text(),
        text(),
        text(),
    )
        .prop_map(|(day, srv, title, alert, response)| TitleSpec {
            day,
            srv,
            title,
            alert,
            response,
        })
}

fn record(devices: usize) -> impl Strategy<Value = RecordSpec> {
    let corruption = proptest::option::weighted(
        0.1,
        prop_oneof![
            Just(Corruption::DuplicatePayload),
            Just(Corruption::EscapedDuplicatePayload),
            Just(Corruption::WrongTypeSrv),
            Just(Corruption::BadUtf8),
            Just(Corruption::Truncated),
            Just(Corruption::NotAnObject),
        ],
    );
    (
        (0..USERS, any::<bool>(), 0..MESSAGES.len()),
        (
            proptest::option::weighted(0.9, 0..devices),
            any::<bool>(),
            0..TYPES.len(),
        ),
        "[A-Za-z0-9+/]{4,24}",
        0usize..3,
        proptest::collection::vec(proptest::bool::weighted(0.2), 6),
        proptest::collection::vec("[a-z]{1,8}", 0..3),
        any::<u64>(),
        corruption,
        titles(),
    )
        .prop_map(
            |(
                (user, lower_user, message),
                (device, lower_device, record_type),
                token,
                metadata_depth,
                optional_absent,
                unknown,
                order_seed,
                corruption,
                titles,
            )| {
                RecordSpec {
                    user,
                    lower_user,
                    message,
                    device,
                    lower_device,
                    record_type,
                    token,
                    metadata_depth,
                    optional_absent,
                    unknown,
                    order_seed,
                    corruption,
                    titles,
                }
            },
        )
}

pub(crate) fn case() -> impl Strategy<Value = Case> {
    (
        (0..USERS + 1, 0..ROLES.len(), 0..PARTIES.len()),
        proptest::collection::vec(meter_point(), 1..5),
        1usize..6,
    )
        .prop_flat_map(|(principal, meter_points, n_devices)| {
            let mps = meter_points.len();
            let device = (
                0..TYPES.len(),
                proptest::collection::vec(0..mps, 1..3),
                proptest::bool::weighted(0.85),
            )
                .prop_map(|(ty, links, in_inventory)| DeviceSpec {
                    ty,
                    links,
                    in_inventory,
                });
            (
                Just(principal),
                Just(meter_points),
                proptest::collection::vec(device, n_devices),
                proptest::collection::vec(record(n_devices), 0..25),
            )
        })
        .prop_map(|(principal, meter_points, devices, records)| Case {
            principal,
            meter_points,
            devices,
            records,
        })
}

fn mpxn(i: usize, gas: bool) -> String {
    if gas {
        format!("{:07}", 1_000_000 + i)
    } else {
        format!("{:013}", 1_000_000_000_000u64 + i as u64)
    }
}

pub(crate) fn inventory(case: &Case) -> Value {
    let mps: Vec<Value> = case
        .meter_points
        .iter()
        .enumerate()
        .map(|(i, mp)| {
            let p = |x: Option<usize>| x.map(|i| PARTIES[i]);
            if mp.gas {
                json!({"mpxn": mpxn(i, true), "fuel": "gas", "gasSupplier": p(mp.supplier), "networkOperator": p(mp.operator)})
            } else {
                json!({"mpxn": mpxn(i, false), "fuel": "electricity", "importSupplier": p(mp.supplier),
                       "exportSupplier": p(mp.export), "networkOperator": p(mp.operator)})
            }
        })
        .collect();
    let devices: Vec<Value> = case
        .devices
        .iter()
        .enumerate()
        .filter(|(_, d)| d.in_inventory)
        .map(|(i, d)| {
            let links: Vec<String> = d.links.iter().map(|&l| mpxn(l, case.meter_points[l].gas)).collect();
            json!({"deviceId": eui(0xD0, i, false), "deviceType": TYPES[d.ty], "mpxns": links})
        })
        .collect();
    json!({"meterPoints": mps, "devices": devices})
}

/// Markers that must never appear in the output when the record is not the principal's.
fn secret_markers(i: usize, r: &RecordSpec) -> Vec<String> {
    let mut m = vec![format!("PL{i}x{}xLP", r.token)];
    for d in 0..=r.metadata_depth {
        m.push(format!("MD{i}x{d}x{}xDM", r.token));
    }
    m
}

fn unknown_markers(i: usize, r: &RecordSpec) -> Vec<String> {
    r.unknown
        .iter()
        .enumerate()
        .flat_map(|(j, name)| [format!("zz{name}{i}x{j}"), format!("UK{i}x{j}xKU")])
        .collect()
}

/// Builds one record line and the (field, raw text) pairs it holds.
pub(crate) fn render(i: usize, r: &RecordSpec) -> (Vec<u8>, Vec<(String, String)>) {
    let mut metadata = json!(format!("MD{i}x{}x{}xDM", r.metadata_depth, r.token));
    for d in (0..r.metadata_depth).rev() {
        metadata = json!({"level": d, "marker": format!("MD{i}x{d}x{}xDM", r.token), "inner": metadata, "list": [1, null, true]});
    }
    let metadata = json!({"marker": format!("MD{i}x{}x{}xDM", 0, r.token), "nested": metadata});
    let device = r.device.map(|d| eui(0xD0, d, r.lower_device));
    let user = eui(0xA0, r.user, r.lower_user);
    let t = &r.titles;
    let timestamp = match t.day {
        Some(day) => format!("2026-11-{day:02}T{:02}:30:00Z", i % 24),
        None => "yesterday".to_owned(),
    };
    let mut fields: Vec<(String, Value)> = vec![
        ("recordId".into(), json!(format!("r-{i}"))),
        ("timestamp".into(), json!(timestamp)),
        ("messageType".into(), json!(MESSAGES[r.message])),
        ("srv".into(), json!(t.srv)),
        ("srvTitle".into(), json!(t.title)),
        ("alertCode".into(), json!(t.alert)),
        ("responseCode".into(), json!(t.response)),
        ("deviceId".into(), json!(device)),
        ("deviceType".into(), json!(TYPES[r.record_type])),
        ("userId".into(), json!(user)),
        ("userRole".into(), json!(ROLES[r.user % ROLES.len()])),
        (
            "requestId".into(),
            json!(format!("{user}:{}:{i}", device.clone().unwrap_or_default())),
        ),
        ("metadata".into(), metadata),
        ("payload".into(), json!(format!("PL{i}x{}xLP", r.token))),
    ];
    // Optional fields may be absent.
    let optional = [
        "srv",
        "srvTitle",
        "alertCode",
        "responseCode",
        "deviceType",
        "requestId",
    ];
    fields.retain(|(k, _)| {
        !optional
            .iter()
            .zip(&r.optional_absent)
            .any(|(o, absent)| *absent && o == k)
    });
    for (j, name) in r.unknown.iter().enumerate() {
        fields.push((format!("zz{name}{i}x{j}"), json!({"v": format!("UK{i}x{j}xKU")})));
    }
    // Any key order.
    let mut seed = r.order_seed;
    for k in (1..fields.len()).rev() {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        fields.swap(k, (seed >> 33) as usize % (k + 1));
    }
    let raw: Vec<(String, String)> = fields.iter().map(|(k, v)| (k.clone(), v.to_string())).collect();
    let body = raw
        .iter()
        .map(|(k, v)| format!("\"{k}\":{v}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut line = format!("{{{body}}}").into_bytes();
    let inject = |line: &mut Vec<u8>, extra: &[u8]| {
        line.splice(1..1, extra.iter().copied());
    };
    match r.corruption {
        None => {}
        Some(Corruption::DuplicatePayload) => inject(&mut line, b"\"payload\":\"x\","),
        Some(Corruption::EscapedDuplicatePayload) => inject(&mut line, br#""pay\u006coad":"x","#),
        Some(Corruption::WrongTypeSrv) => inject(&mut line, br#""srv":4.1,"#),
        Some(Corruption::BadUtf8) => inject(&mut line, b"\"x\":\"\xff\","),
        Some(Corruption::Truncated) => line.truncate(line.len() / 2),
        Some(Corruption::NotAnObject) => line.insert(0, b'['),
    }
    (line, raw)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn no_payload_or_unknown_field_leaks_and_output_matches_the_contract(case in case()) {
        let engine = engine();
        let (pu, pr, pp) = case.principal;
        let sub = eui(0xA0, pu, false);
        let principal = Principal::from_claims(&sub, ROLES[pr], PARTIES[pp]).unwrap();
        let inv_json = inventory(&case);
        let (inventory, warnings) = Inventory::parse(&inv_json.to_string()).unwrap();
        prop_assert!(warnings.is_empty(), "{:?}", warnings);

        let mut input = Vec::new();
        let mut expected = String::new();
        for (i, r) in case.records.iter().enumerate() {
            let (line, raw) = render(i, r);
            input.extend_from_slice(&line);
            input.push(b'\n');
            if r.corruption.is_none() {
                let device = r.device.map(|d| eui(0xD0, d, r.lower_device));
                let allowed = oracle::visible((&sub, ROLES[pr], PARTIES[pp]), &eui(0xA0, r.user, r.lower_user), device.as_deref(), &inv_json);
                expected.push_str(&oracle::expected_line(&raw, allowed));
            }
        }

        let (output, stats) = satgate::views::filter_bytes(
            engine.for_principal(&principal), &input, |id| inventory.get(id).cloned());

        for (i, r) in case.records.iter().enumerate() {
            // (a) nothing secret of another User's record, nothing at all of a malformed one.
            if r.user != pu || r.corruption.is_some() {
                for m in secret_markers(i, r) {
                    prop_assert!(!contains(&output, &m), "record {} leaked {}", i, m);
                }
            }
            // (b) no unknown field, ever.
            for m in unknown_markers(i, r) {
                prop_assert!(!contains(&output, &m), "record {} leaked unknown field {}", i, m);
            }
        }
        // (c) exactly the oracle's output.
        prop_assert_eq!(String::from_utf8_lossy(&output), expected);
        let malformed = case.records.iter().filter(|r| r.corruption.is_some()).count() as u64;
        prop_assert_eq!(stats.malformed, malformed);
        prop_assert_eq!(stats.records_in, case.records.len() as u64);
    }
}
