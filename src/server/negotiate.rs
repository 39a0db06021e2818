//! Which format the caller asked for: CSV when `Accept` prefers `text/csv`, a page when it
//! prefers `text/html` (a browser) and the view has one, the JSON form otherwise. Lenient on purpose: an `Accept` we cannot serve gets the default, as before CSV
//! existed, rather than 406.

use http::{header, HeaderMap};

use crate::views::Format;

/// The format for a `/sat/*` answer: `text/csv` if the caller gives it a higher quality than
/// any JSON type or wildcard it also lists; JSON on a tie. With `page` (the view has one),
/// `text/html` likewise, ahead of CSV on a tie (a browser's `Accept` lists `text/html` first
/// and `*/*` lower).
pub fn format(headers: &HeaderMap, page: bool) -> Format {
    let mut csv = 0.0f32;
    let mut html = 0.0f32;
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
                "text/html" if page => html = html.max(q),
                "application/x-ndjson" | "application/json" | "application/*" | "*/*" => json = json.max(q),
                _ => {}
            }
        }
    }
    if html > 0.0 && html > json && html >= csv {
        Format::Html
    } else if csv > 0.0 && csv > json {
        Format::Csv
    } else {
        Format::Json
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(accept: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for a in accept {
            h.append(header::ACCEPT, a.parse().unwrap());
        }
        h
    }

    fn pick(accept: &[&str]) -> Format {
        format(&headers(accept), false)
    }

    #[test]
    fn a_page_only_for_a_view_with_one_when_preferred() {
        let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        assert_eq!(format(&headers(&[browser]), true), Format::Html);
        assert_eq!(format(&headers(&[browser]), false), Format::Json);
        assert_eq!(format(&headers(&["text/html, text/csv"]), true), Format::Html);
        assert_eq!(format(&headers(&["text/html;q=0.5, text/csv"]), true), Format::Csv);
        assert_eq!(
            format(&headers(&["text/html, application/json"]), true),
            Format::Json,
            "a tie keeps JSON"
        );
        assert_eq!(format(&headers(&["text/html;q=0"]), true), Format::Json);
        assert_eq!(format(&headers(&[]), true), Format::Json);
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
