//! Every `satgate serve` default, in one block: the help text, configuration resolution and the
//! demo read them from here. Each value is written once: a component's own settings (the
//! ownership cache, the inventory service client, the inventory file, the stream limits) are
//! defined by that component and only named here, so configuration sits above what it
//! configures and a component never imports its configuration.

use std::time::Duration;

use crate::ownership::{CacheSettings, HttpSettings, InventoryFile};
use crate::server::StreamLimits;

pub const LISTEN: &str = "127.0.0.1:8080";
pub const POLICIES: &str = "policies";
pub const SCHEMA: &str = "schemas/sat.cedarschema";

/// Longest accepted record line (one SAT record, payload included).
pub const MAX_LINE_BYTES: usize = crate::stream::DEFAULT_MAX_LINE_BYTES;
pub const MAX_CONNECTIONS: usize = 1024;
pub const STREAM_LIMITS: StreamLimits = StreamLimits::DEFAULT;
/// Long enough for any real client on a slow link, short enough that sockets opened and left
/// silent (or trickling a byte at a time) give their connection slot back quickly.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(2);
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Per inventory service call, connect included.
pub const INVENTORY_TIMEOUT: Duration = HttpSettings::DEFAULT.request_timeout;
pub const INVENTORY_MAX_IN_FLIGHT: usize = HttpSettings::DEFAULT.max_in_flight;
pub const OWNERSHIP_TTL: Duration = CacheSettings::DEFAULT.ttl;
/// See [`InventoryFile::DEFAULT_MAX_AGE`].
pub const INVENTORY_MAX_AGE: Duration = InventoryFile::DEFAULT_MAX_AGE;
pub const OWNERSHIP_UNKNOWN_TTL: Duration = CacheSettings::DEFAULT.unknown_ttl;
pub const OWNERSHIP_CACHE_CAPACITY: u64 = CacheSettings::DEFAULT.capacity;

/// The decision log file's size before it is rotated, and the rotated files kept: 1 GiB in all.
pub const DECISION_LOG_MAX_BYTES: u64 = 100 << 20;
pub const DECISION_LOG_MAX_FILES: usize = 9;

/// `2s`, `250ms`, `1m`: how a duration is written in flags, files and help.
pub fn show(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_show_as_they_parse() {
        for d in [
            HEADER_TIMEOUT,
            IDLE_TIMEOUT,
            Duration::from_millis(250),
            Duration::from_secs(120),
        ] {
            assert_eq!(super::super::parse_duration(&show(d)), Ok(d));
        }
    }
}
