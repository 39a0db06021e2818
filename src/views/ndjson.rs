//! The records as NDJSON (docs/contract.md §5): the part of each record a principal may see.
//!
//! An allowlist: only the fields of docs/contract.md §1 are ever written, only for allowed
//! classes, in the contract's order, with the upstream's exact bytes as values.

use crate::model::{Class, Classes};
use crate::stream::{Field, Record, Sink};

/// The records as NDJSON lines.
#[derive(Clone, Copy, Debug, Default)]
pub struct Ndjson;

impl Sink for Ndjson {
    fn visible(&mut self, record: &Record<'_>, allowed: Classes, out: &mut Vec<u8>) {
        write(record, allowed, out);
    }
}

/// Appends `record` as one NDJSON line holding only the fields of `allowed` classes, and says
/// whether it did: when `ViewTitle` is denied nothing is written (`false`), since such a record
/// is left out entirely.
pub fn write(record: &Record<'_>, allowed: Classes, out: &mut Vec<u8>) -> bool {
    if !allowed.contains(Class::Title) {
        return false;
    }
    out.push(b'{');
    let mut first = true;
    for f in Field::ALL {
        if !allowed.contains(f.class()) {
            continue;
        }
        let Some(value) = record.raw(f) else { continue };
        if !first {
            out.push(b',');
        }
        first = false;
        out.push(b'"');
        out.extend_from_slice(f.name().as_bytes());
        out.extend_from_slice(b"\":");
        out.extend_from_slice(value.as_bytes());
    }
    out.extend_from_slice(b"}\n");
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = r#"{"payload":"UEFZ","zzz":{"payload":"nested"},"metadata":{"a":[1,2]},"requestId":"req","userRole":"IS","userId":"90-B3-D5-1F-30-01-00-00","deviceType":"ESME","deviceId":null,"responseCode":"I0","alertCode":null,"srvTitle":"T","srv":"4.1.1","messageType":"ServiceResponse","timestamp":"2026-11-01T09:30:00Z","recordId":"r-1"}"#;

    fn project(allowed: Classes) -> String {
        let r = Record::parse(LINE.as_bytes()).unwrap();
        let mut out = Vec::new();
        write(&r, allowed, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn every_class_in_contract_order_without_unknown_fields() {
        assert_eq!(
            project(Classes::ALL),
            r#"{"recordId":"r-1","timestamp":"2026-11-01T09:30:00Z","messageType":"ServiceResponse","srv":"4.1.1","srvTitle":"T","alertCode":null,"responseCode":"I0","deviceId":null,"deviceType":"ESME","userRole":"IS","userId":"90-B3-D5-1F-30-01-00-00","requestId":"req","metadata":{"a":[1,2]},"payload":"UEFZ"}"#
                .to_owned()
                + "\n"
        );
    }

    #[test]
    fn title_only_drops_identity_metadata_payload() {
        let out = project([Class::Title].into_iter().collect());
        assert_eq!(
            out,
            "{\"recordId\":\"r-1\",\"timestamp\":\"2026-11-01T09:30:00Z\",\"messageType\":\"ServiceResponse\",\"srv\":\"4.1.1\",\"srvTitle\":\"T\",\"alertCode\":null,\"responseCode\":\"I0\",\"deviceId\":null,\"deviceType\":\"ESME\",\"userRole\":\"IS\"}\n"
        );
    }

    #[test]
    fn whitespace_around_values_is_not_copied() {
        let spaced = "{ \"recordId\" :\t\"r-1\" , \"timestamp\":\"t\",\"messageType\" : \"DCCAlert\" ,\"userId\": \"90-B3-D5-1F-30-01-00-00\" , \"metadata\" : { \"a\" : 1 } }\r";
        let r = Record::parse(spaced.as_bytes()).unwrap();
        let mut out = Vec::new();
        write(&r, Classes::ALL, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"recordId\":\"r-1\",\"timestamp\":\"t\",\"messageType\":\"DCCAlert\",\"userId\":\"90-B3-D5-1F-30-01-00-00\",\"metadata\":{ \"a\" : 1 }}\n"
        );
    }

    #[test]
    fn no_title_means_no_record_at_all() {
        let all_but_title: Classes = [Class::Identity, Class::Metadata, Class::Payload].into_iter().collect();
        assert_eq!(project(all_but_title), "");
        assert_eq!(project(Classes::NONE), "");
    }
}
