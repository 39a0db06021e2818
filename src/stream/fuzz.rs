//! The differential check behind the fuzz target `fuzz/fuzz_targets/record_scan.rs`, kept beside
//! the code it exercises so the target stays a few lines.

/// The differential check behind `fuzz/fuzz_targets/record_scan.rs` and the scanner's property
/// tests: the scanner ([`super::Record::parse`]) and the serde_json reference
/// ([`super::reference::parse`]) accept exactly the same lines, and extract the same raw
/// bytes and decision fields. Rejections may differ in kind only where one line has two problems
/// (`scan.rs` lists how); invalid UTF-8 and the rules on known fields give the same error.
pub fn check_scan(line: &[u8]) {
    use super::RecordError::{Invalid, Missing, NotUtf8, WrongType};
    let new = super::Record::parse(line);
    let old = super::reference::parse(line);
    let text = || String::from_utf8_lossy(line).into_owned();
    match (&new, &old) {
        (Ok(n), Ok(o)) => {
            for f in super::Field::ALL {
                assert_eq!(n.raw(f), o.raw(f), "{} differs in {:?}", f.name(), text());
            }
            assert_eq!(
                (n.user_id, n.message_type, n.device_id),
                (o.user_id, o.message_type, o.device_id),
                "decoded fields differ in {:?}",
                text()
            );
        }
        (Err(n), Err(o)) => {
            assert_eq!(
                *n == NotUtf8,
                *o == NotUtf8,
                "scanner {n:?}, reference {o:?} on {:?}",
                text()
            );
            let about_fields = |e: &super::RecordError| matches!(e, WrongType(_) | Missing(_) | Invalid(..));
            if about_fields(n) || about_fields(o) {
                assert_eq!(n, o, "on {:?}", text());
            }
        }
        _ => panic!("scanner {new:?}, reference {old:?} on {:?}", text()),
    }
}
