//! The record's field table, in one place: the fields satgate may write, their classes and JSON
//! kinds, the depth limit, and why a line is not a usable record. The scanner ([`super::scan`])
//! and the record checks ([`super::record`]) both import it; it imports neither.

use crate::model::Class;

/// The deepest nesting a record may have; the record object itself is depth 1.
pub const MAX_DEPTH: usize = 64;

/// The raw value of each known field, by [`Field`] index.
pub(crate) type Raw<'a> = [Option<&'a str>; 14];

/// The fields satgate may ever write, in docs/contract.md §1 order.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Field {
    RecordId,
    Timestamp,
    MessageType,
    Srv,
    SrvTitle,
    AlertCode,
    ResponseCode,
    DeviceId,
    DeviceType,
    UserRole,
    UserId,
    RequestId,
    Metadata,
    Payload,
}

/// What a known field may hold.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    String,
    NullableString,
    NullableObject,
}

impl Field {
    pub const ALL: [Field; 14] = [
        Field::RecordId,
        Field::Timestamp,
        Field::MessageType,
        Field::Srv,
        Field::SrvTitle,
        Field::AlertCode,
        Field::ResponseCode,
        Field::DeviceId,
        Field::DeviceType,
        Field::UserRole,
        Field::UserId,
        Field::RequestId,
        Field::Metadata,
        Field::Payload,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Field::RecordId => "recordId",
            Field::Timestamp => "timestamp",
            Field::MessageType => "messageType",
            Field::Srv => "srv",
            Field::SrvTitle => "srvTitle",
            Field::AlertCode => "alertCode",
            Field::ResponseCode => "responseCode",
            Field::DeviceId => "deviceId",
            Field::DeviceType => "deviceType",
            Field::UserRole => "userRole",
            Field::UserId => "userId",
            Field::RequestId => "requestId",
            Field::Metadata => "metadata",
            Field::Payload => "payload",
        }
    }

    pub const fn class(self) -> Class {
        match self {
            Field::UserId | Field::RequestId => Class::Identity,
            Field::Metadata => Class::Metadata,
            Field::Payload => Class::Payload,
            _ => Class::Title,
        }
    }

    pub(crate) fn kind(self) -> Kind {
        match self {
            Field::RecordId | Field::Timestamp | Field::MessageType | Field::UserId => Kind::String,
            Field::Metadata => Kind::NullableObject,
            _ => Kind::NullableString,
        }
    }

    pub(crate) fn required(self) -> bool {
        self.kind() == Kind::String
    }

    pub(super) fn from_name(name: &str) -> Option<Field> {
        Some(match name {
            "recordId" => Field::RecordId,
            "timestamp" => Field::Timestamp,
            "messageType" => Field::MessageType,
            "srv" => Field::Srv,
            "srvTitle" => Field::SrvTitle,
            "alertCode" => Field::AlertCode,
            "responseCode" => Field::ResponseCode,
            "deviceId" => Field::DeviceId,
            "deviceType" => Field::DeviceType,
            "userRole" => Field::UserRole,
            "userId" => Field::UserId,
            "requestId" => Field::RequestId,
            "metadata" => Field::Metadata,
            "payload" => Field::Payload,
            _ => return None,
        })
    }
}

/// Why a line is not a usable record. Messages never quote field values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("line is not valid UTF-8")]
    NotUtf8,
    #[error("line is not a JSON object: {0}")]
    Syntax(String),
    #[error("field {0:?} appears more than once")]
    DuplicateKey(String),
    #[error("field {0} has the wrong type")]
    WrongType(&'static str),
    #[error("field {0} is missing")]
    Missing(&'static str),
    #[error("field {0} is not a valid value: {1}")]
    Invalid(&'static str, String),
    /// Valid JSON, but nested past [`MAX_DEPTH`]: a malformed record, not a sign
    /// that the stream is not NDJSON.
    #[error("nesting deeper than {} levels", MAX_DEPTH)]
    TooDeep,
}
