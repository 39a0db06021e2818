//! Which format the caller asked for: CSV when `Accept` prefers `text/csv`, the JSON form
//! otherwise. Lenient on purpose: an `Accept` we cannot serve gets the default, as before CSV
//! existed, rather than 406.

use http::{header, HeaderMap};

use crate::views::Format;

/// The format for a `/sat/*` answer: `text/csv` if the caller gives it a higher quality than
/// any JSON type or wildcard it also lists; JSON on a tie.
pub fn format(headers: &HeaderMap) -> Format {
    let mut csv = 0.0f32;
    let mut json = 0.0f32;
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for range in value.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q=").or_else(|| p.trim().strip_prefix("Q=")))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0)
                .clamp(0.0, 1.0);
            match media.as_str() {
                "text/csv" => csv = csv.max(q),
                "application/x-ndjson" | "application/json" | "application/*" | "*/*" => json = json.max(q),
                _ => {}
            }
        }
    }
    if csv > 0.0 && csv > json {
        Format::Csv
    } else {
        Format::Json
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(accept: &[&str]) -> Format {
        let mut h = HeaderMap::new();
        for a in accept {
            h.append(header::ACCEPT, a.parse().unwrap());
        }
        format(&h)
    }

    #[test]
    fn csv_only_when_preferred() {
        assert_eq!(pick(&[]), Format::Json);
        assert_eq!(pick(&["text/csv"]), Format::Csv);
        assert_eq!(pick(&["Text/CSV; charset=utf-8"]), Format::Csv);
        assert_eq!(pick(&["text/csv, */*;q=0.8"]), Format::Csv);
        assert_eq!(pick(&["application/json", "text/csv;q=0.5"]), Format::Json);
        assert_eq!(pick(&["text/csv;q=0"]), Format::Json);
        assert_eq!(
            pick(&["text/csv, application/x-ndjson"]),
            Format::Json,
            "a tie keeps JSON"
        );
        assert_eq!(pick(&["text/html"]), Format::Json);
        assert_eq!(pick(&["text/csv;q=nonsense"]), Format::Csv);
    }
}
