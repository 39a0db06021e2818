//! Which Devices' records a request showed to someone other than their own User (the owner view):
//! what "who has seen titles about this Device" is answered from. A [`Sink`] around the view,
//! counting each visible record it is handed; ids and counts only, never a record's values.

use rustc_hash::FxHashMap;
use serde_json::{json, Value};

use crate::model::{Classes, Eui64};
use crate::stream::{Record, Sink};

/// Devices named one by one in an end record; records about any further Devices are counted
/// together, so an end record stays small (about 40 KB at most) whatever the answer held.
pub const MAX_DEVICES: usize = 1000;

/// Records shown through the owner view, by Device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnerView {
    pub devices: FxHashMap<Eui64, u64>,
    /// Records about Devices past the first [`MAX_DEVICES`].
    pub more_devices_records: u64,
}

impl OwnerView {
    fn count(&mut self, device: Eui64) {
        if let Some(n) = self.devices.get_mut(&device) {
            *n += 1;
        } else if self.devices.len() < MAX_DEVICES {
            self.devices.insert(device, 1);
        } else {
            self.more_devices_records += 1;
        }
    }

    /// `{"devices":{"EUI":records,...},"moreDevicesRecords":n}`, Devices in id order.
    pub fn to_json(&self) -> Value {
        // serde_json's map is ordered by key.
        let devices: serde_json::Map<String, Value> =
            self.devices.iter().map(|(d, n)| (d.to_string(), json!(n))).collect();
        json!({
            "devices": devices,
            "moreDevicesRecords": self.more_devices_records,
        })
    }
}

/// A view, and a count of what it was handed about others' records.
pub struct Shown<V> {
    user: Eui64,
    view: V,
    owner_view: OwnerView,
}

impl<V> Shown<V> {
    /// `user`: the caller's User ID; records of that User are its own, not the owner view.
    pub fn new(user: Eui64, view: V) -> Self {
        Self {
            user,
            view,
            owner_view: OwnerView::default(),
        }
    }

    pub fn view(&self) -> &V {
        &self.view
    }

    pub fn owner_view(&self) -> &OwnerView {
        &self.owner_view
    }
}

impl<V: Sink> Sink for Shown<V> {
    fn begin(&mut self, out: &mut Vec<u8>) {
        self.view.begin(out);
    }

    fn visible(&mut self, record: &Record<'_>, allowed: Classes, out: &mut Vec<u8>) {
        if record.user_id != self.user {
            if let Some(device) = record.device_id {
                self.owner_view.count(device);
            }
        }
        self.view.visible(record, allowed, out);
    }

    fn stopped(&self) -> bool {
        self.view.stopped()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_past_the_cap_are_counted_together() {
        let mut v = OwnerView::default();
        for i in 0..(MAX_DEVICES as u64 + 5) {
            let id = Eui64::parse(&format!("00-DB-00-00-00-00-{:02X}-{:02X}", i >> 8, i & 0xff)).unwrap();
            v.count(id);
            if i == 0 {
                v.count(id);
            }
        }
        assert_eq!(v.devices.len(), MAX_DEVICES);
        assert_eq!(v.more_devices_records, 5);
        let j = v.to_json();
        assert_eq!(j["devices"]["00-DB-00-00-00-00-00-00"], 2);
        assert_eq!(j["moreDevicesRecords"], 5);
    }
}
