//! The domain vocabulary shared by every stage: identifiers, roles, message types, the principal
//! and the field classes of a SAT record. Parsing here is strict: anything that is not exactly one
//! of these is an error, never a default.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// A value that is not one of the identifiers or names this module knows.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{what}: {reason}")]
pub struct InvalidValue {
    pub what: &'static str,
    pub reason: String,
}

impl InvalidValue {
    fn new(what: &'static str, reason: impl Into<String>) -> Self {
        Self {
            what,
            reason: reason.into(),
        }
    }
}

/// An EUI-64 (User ID or Device ID): eight hex octets joined by hyphens. Held as a number so
/// comparison is case-insensitive by construction; displayed upper case.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Eui64(u64);

impl Eui64 {
    pub const fn from_u64(v: u64) -> Self {
        Self(v)
    }

    pub const fn as_u64(self) -> u64 {
        self.0
    }

    /// Parses `^[0-9A-Fa-f]{2}(-[0-9A-Fa-f]{2}){7}$` without allocating.
    pub fn parse(s: &str) -> Result<Self, InvalidValue> {
        let b = s.as_bytes();
        let bad = || InvalidValue::new("EUI-64", "expected 8 hex octets joined by hyphens");
        if b.len() != 23 {
            return Err(bad());
        }
        let mut v: u64 = 0;
        for (i, octet) in b.chunks(3).enumerate() {
            if i < 7 && octet[2] != b'-' {
                return Err(bad());
            }
            let hi = hex(octet[0]).ok_or_else(bad)?;
            let lo = hex(octet[1]).ok_or_else(bad)?;
            v = (v << 8) | u64::from(hi << 4 | lo);
        }
        Ok(Self(v))
    }
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

impl FromStr for Eui64 {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Eui64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.0.to_be_bytes();
        write!(
            f,
            "{:02X}-{:02X}-{:02X}-{:02X}-{:02X}-{:02X}-{:02X}-{:02X}",
            o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]
        )
    }
}

impl fmt::Debug for Eui64 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Declares a closed set of names with exact (case-sensitive) parsing.
macro_rules! name_enum {
    ($(#[$m:meta])* $name:ident, $what:literal { $($variant:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub const fn as_str(self) -> &'static str {
                match self { $($name::$variant => $s),+ }
            }
        }

        impl FromStr for $name {
            type Err = InvalidValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($s => Ok($name::$variant),)+
                    _ => Err(InvalidValue::new($what, format!("unknown value {s:?}"))),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

name_enum!(
    /// DUIS User Roles.
    Role, "role" {
        ImportSupplier = "IS",
        ExportSupplier = "ES",
        GasSupplier = "GS",
        ElectricityDistributor = "ED",
        GasTransporter = "GT",
        RegisteredSupplierAgent = "RSA",
        OtherUser = "OU",
    }
);

name_enum!(
    /// The message types kept in the SAT.
    MessageType, "messageType" {
        ServiceRequest = "ServiceRequest",
        SignedPreCommand = "SignedPreCommand",
        Acknowledgement = "Acknowledgement",
        PreCommand = "PreCommand",
        ServiceResponse = "ServiceResponse",
        DeviceAlert = "DeviceAlert",
        DccAlert = "DCCAlert",
    }
);

name_enum!(
    /// The Device types a policy can tell apart: the Home Area Network types of
    /// docs/contract.md §4, and `OTHER` for every other type (non-HAN, misspelt, or not a DUIS
    /// type at all). A closed set on purpose: the inventory's free text never reaches Cedar, so
    /// the decision space stays finite (see `decision::space`).
    DeviceType, "deviceType" {
        Esme = "ESME",
        Gsme = "GSME",
        Chf = "CHF",
        Gpf = "GPF",
        Ppmid = "PPMID",
        Hcalcs = "HCALCS",
        Ihd = "IHD",
        Cad = "CAD",
        Other = "OTHER",
    }
);

impl DeviceType {
    /// The inventory's type, exactly as written (case-sensitive): a HAN type is itself, anything
    /// else is [`DeviceType::Other`]. Never an error: an unknown type only narrows.
    pub fn of_inventory(s: &str) -> Self {
        match s.parse() {
            Ok(t) => t,
            Err(_) => DeviceType::Other,
        }
    }

    /// The Home Area Network types (every member but `OTHER`).
    pub fn is_han(self) -> bool {
        self != DeviceType::Other
    }
}

/// Who is asking: one User ID acting in one role for one Party.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Principal {
    pub user_id: Eui64,
    pub role: Role,
    pub party: String,
}

impl Principal {
    /// Builds a principal from untrusted claim values, rejecting anything unusable.
    pub fn from_claims(sub: &str, role: &str, party: &str) -> Result<Self, InvalidValue> {
        let user_id = Eui64::parse(sub).map_err(|e| InvalidValue::new("sub", e.reason))?;
        let role = role.parse()?;
        if party.is_empty() || party.len() > 64 || party.chars().any(char::is_control) {
            return Err(InvalidValue::new(
                "party",
                "must be 1 to 64 characters with no control characters",
            ));
        }
        Ok(Self {
            user_id,
            role,
            party: party.to_owned(),
        })
    }
}

/// A field class of docs/contract.md §1; each is one Cedar action.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub enum Class {
    Title = 0,
    Identity = 1,
    Metadata = 2,
    Payload = 3,
}

impl Class {
    pub const ALL: [Class; 4] = [Class::Title, Class::Identity, Class::Metadata, Class::Payload];

    /// The Cedar action that decides this class.
    pub const fn action(self) -> &'static str {
        match self {
            Class::Title => "ViewTitle",
            Class::Identity => "ViewIdentity",
            Class::Metadata => "ViewMetadata",
            Class::Payload => "ViewPayload",
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Class::Title => "title",
            Class::Identity => "identity",
            Class::Metadata => "metadata",
            Class::Payload => "payload",
        }
    }
}

/// The set of classes a principal may see of one record.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Classes(u8);

impl Classes {
    pub const NONE: Classes = Classes(0);
    pub const ALL: Classes = Classes(0b1111);

    pub const fn contains(self, c: Class) -> bool {
        self.0 & (1 << c as u8) != 0
    }

    pub fn insert(&mut self, c: Class) {
        self.0 |= 1 << c as u8;
    }

    pub fn iter(self) -> impl Iterator<Item = Class> {
        Class::ALL.into_iter().filter(move |c| self.contains(*c))
    }
}

impl FromIterator<Class> for Classes {
    fn from_iter<I: IntoIterator<Item = Class>>(iter: I) -> Self {
        let mut s = Classes::NONE;
        for c in iter {
            s.insert(c);
        }
        s
    }
}

impl fmt::Debug for Classes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(Class::name)).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eui64_parses_either_case_and_prints_upper() {
        let a = Eui64::parse("90-b3-d5-1f-30-01-00-0a").unwrap();
        let b = Eui64::parse("90-B3-D5-1F-30-01-00-0A").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "90-B3-D5-1F-30-01-00-0A");
    }

    #[test]
    fn eui64_rejects_near_misses() {
        for bad in [
            "",
            "90-B3-D5-1F-30-01-00",
            "90-B3-D5-1F-30-01-00-0A-",
            "90:B3:D5:1F:30:01:00:0A",
            "90-B3-D5-1F-30-01-00-0G",
            "90B3-D5-1F-30-01-00-0A0",
            " 90-B3-D5-1F-30-01-00-0",
            "９0-B3-D5-1F-30-01-00-0",
        ] {
            assert!(Eui64::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn names_parse_exactly() {
        assert_eq!("IS".parse::<Role>().unwrap(), Role::ImportSupplier);
        assert!("is".parse::<Role>().is_err());
        assert_eq!("DCCAlert".parse::<MessageType>().unwrap(), MessageType::DccAlert);
        assert!("Alert".parse::<MessageType>().is_err());
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>().unwrap(), *r);
        }
    }

    #[test]
    fn principal_claims_are_checked() {
        assert!(Principal::from_claims("90-B3-D5-1F-30-01-00-00", "IS", "SUPA").is_ok());
        assert!(Principal::from_claims("bad", "IS", "SUPA").is_err());
        assert!(Principal::from_claims("90-B3-D5-1F-30-01-00-00", "XX", "SUPA").is_err());
        assert!(Principal::from_claims("90-B3-D5-1F-30-01-00-00", "IS", "").is_err());
    }

    #[test]
    fn classes_set_ops() {
        let mut c = Classes::NONE;
        c.insert(Class::Title);
        c.insert(Class::Payload);
        assert!(c.contains(Class::Title) && c.contains(Class::Payload));
        assert!(!c.contains(Class::Identity));
        assert_eq!(c.iter().collect::<Vec<_>>(), vec![Class::Title, Class::Payload]);
    }
}
