//! `satgate explain`: for one principal, one record and an inventory, every class's decision, the
//! policies that decided it (with `file:line`), any errors, and the facts the policies saw.
//! Prints no payload, metadata or identity of the record.

use std::path::PathBuf;

use super::{CmdError, Exit, PolicyArgs, PrincipalArgs};
use crate::decision::space::classes_label;
use crate::decision::{DeviceFacts, Facts};
use crate::ownership::{Inventory, PartyRegistration};
use crate::stream::Record;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub policy: PolicyArgs,
    #[command(flatten)]
    pub principal: PrincipalArgs,
    /// One SAT record: a file holding a JSON object, or the JSON object itself.
    #[arg(long, value_name = "FILE_OR_JSON")]
    pub record: String,
    /// Inventory JSON file (docs/contract.md §2).
    #[arg(long)]
    pub inventory: PathBuf,
}

pub fn run(args: &Args) -> Result<Exit, CmdError> {
    print!("{}", explain(args)?);
    Ok(Exit::Ok)
}

fn usage(message: String) -> CmdError {
    CmdError::new(message)
}

/// The explanation as text.
pub fn explain(args: &Args) -> Result<String, CmdError> {
    let engine = args.policy.load()?;
    let principal = args.principal.principal().map_err(|e| usage(e.to_string()))?;
    let record_text = if args.record.trim_start().starts_with('{') {
        args.record.clone()
    } else {
        std::fs::read_to_string(&args.record).map_err(|e| usage(format!("{}: {e}", args.record)))?
    };
    let record_json: serde_json::Value =
        serde_json::from_str(&record_text).map_err(|e| usage(format!("record is not JSON: {e}")))?;
    // The filter's own parser, on the one-line form, so explain sees exactly what `filter` sees.
    let line = serde_json::to_vec(&record_json).map_err(|e| usage(e.to_string()))?;
    let record = Record::parse(&line).map_err(|e| usage(format!("record is not a usable SAT record: {e}")))?;
    let inventory = Inventory::read(&args.inventory).map_err(CmdError::new)?.inventory;

    let entry = record.device_id.and_then(|id| inventory.get(id).cloned());
    let device = entry.as_deref().map(|e| DeviceFacts::of(&principal, e));
    let facts = Facts::new(&principal, record.user_id, record.message_type, device);
    let verdict = engine.evaluate(principal.role, &facts);

    let mut out = String::new();
    let record_id = record_json
        .get("recordId")
        .and_then(|v| v.as_str())
        .unwrap_or("(no recordId)");
    out.push_str(&format!(
        "policy set: {}\nprincipal: {} role {} party {:?}\nrecord: {record_id}\n\nfacts the policies saw:\n",
        engine.identity(),
        principal.user_id,
        principal.role,
        principal.party
    ));
    out.push_str(&format!("  messageType: {}\n", facts.message_type));
    out.push_str(&format!(
        "  principalIsUser: {} (record's userId {} the principal)\n",
        facts.principal_is_user,
        if facts.principal_is_user { "is" } else { "is not" }
    ));
    match (&facts.device, record.device_id) {
        (Some(d), _) => {
            out.push_str(&format!(
                "  device.deviceType: {} (from the inventory's {:?}; every non-HAN type is OTHER)\n",
                d.device_type,
                entry.as_deref().map_or("?", |e| &*e.device_type)
            ));
            for (flag, name) in PartyRegistration::FLAGS {
                out.push_str(&format!(
                    "  device.principalParty.{name}: {}\n",
                    d.principal_party.contains(flag)
                ));
            }
        }
        (None, Some(id)) => out.push_str(&format!(
            "  device: absent (Device {id} is not in the inventory or unusable: no owners)\n"
        )),
        (None, None) => out.push_str("  device: absent (the record names no Device)\n"),
    }
    out.push_str("\ndecisions:\n");
    for d in &verdict.classes {
        out.push_str(&format!(
            "  {:<9} {}\n",
            d.class.name(),
            if d.allowed { "ALLOW" } else { "DENY" }
        ));
        if d.reasons.is_empty() && d.errors.is_empty() {
            out.push_str("    no policy applied (default deny)\n");
        }
        for r in &d.reasons {
            let origin = engine
                .origin(&cedar_policy::PolicyId::new(r))
                .map_or_else(String::new, |o| format!(" ({o})"));
            out.push_str(&format!("    decided by {r}{origin}\n"));
        }
        for e in &d.errors {
            out.push_str(&format!("    error: {e}\n"));
        }
    }
    let allowed = verdict.allowed();
    out.push_str(&format!(
        "\nresult: {}\n",
        if allowed == crate::model::Classes::NONE {
            "record left out (title denied)".to_owned()
        } else {
            format!("written with {}", classes_label(allowed))
        }
    ));
    Ok(out)
}
