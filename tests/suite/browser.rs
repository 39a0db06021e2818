//! The activity page in a real browser (headless Chromium): the demo's data, with hostile SRV
//! titles in the erratic Device's burst, written by `satgate activity --format html` and loaded
//! from a file as an analyst would open it. Checked on the DOM Chromium reports after parsing
//! (`--dump-dom`), not on our own bytes: the flagged Device comes first, its chart has one bar
//! group per day with the burst day marked, and no hostile title became an element or an
//! attribute, and nothing was requested from a local listener the titles point at. A screenshot is kept in `target/browser/` to look at.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use satgate::sample::Market;
use satgate::stream::{filter_all, RecordFilter};
use satgate::views::html::timeline::Timeline;
use scraper::{ElementRef, Html, Selector};
use serde_json::Value;

/// Titles built to leave element text, a quoted attribute and the chart's SVG.
const HOSTILE: [&str; 4] = [
    "</td></tr></table><script>document.title='pwned'</script>",
    "\"><img src=x onerror=\"document.title='pwned'\">",
    "</title></svg><iframe src=\"https://evil.example/\"></iframe>",
    "<svg><script>document.title='pwned'</script></svg><style>*{display:none}</style>",
];

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find_map(|name| {
            let ok = Command::new(name)
                .arg("--version")
                .stderr(Stdio::null())
                .output()
                .is_ok_and(|o| o.status.success());
            ok.then(|| PathBuf::from(name))
        })
}

/// Headless Chromium on `page` with `args`, with no network side-channels of its own.
fn run_chromium(browser: &Path, profile: &Path, page: &Path, args: &[&str]) -> std::process::Output {
    Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .stdin(Stdio::null())
        .output()
        .expect("chromium runs")
}

/// The demo's records (2,000 over November 2026 and a burst of 60 on day 28 about a Device of
/// Supplier A), the burst's titles made hostile (some of them loading from `trap`, a local
/// listener no request may reach); with the inventory and the Supplier's claims.
fn demo_data(trap: &str) -> (String, String, [String; 3], String) {
    let loads = [
        format!("<img src=\"http://{trap}/img\">"),
        format!("<link rel=stylesheet href=\"http://{trap}/css\">"),
        format!("\" style=\"background:url(http://{trap}/bg)\" x=\""),
    ];
    let hostile: Vec<&str> = HOSTILE
        .iter()
        .copied()
        .chain(loads.iter().map(String::as_str))
        .collect();
    let market = Market::generate(8, 2026);
    let supplier = market
        .users
        .iter()
        .position(|u| u.name == "Supplier A, import")
        .expect("the demo's Supplier");
    let device = market
        .devices
        .iter()
        .find(|d| d.owners.contains(&supplier))
        .expect("a Device of the Supplier");
    let mut text = market.ndjson(2_000, 2026);
    for (i, line) in market.burst(device, 28, 60, 2_000, 7).lines().enumerate() {
        let mut record: Value = serde_json::from_str(line).unwrap();
        record["srvTitle"] = Value::from(hostile[i % hostile.len()]);
        text.push_str(&record.to_string());
        text.push('\n');
    }
    let p = &market.users[supplier].principal;
    let claims = [p.user_id.to_string(), p.role.as_str().to_owned(), p.party.clone()];
    (text, market.inventory_json.clone(), claims, device.id.to_string())
}

#[test]
fn the_page_in_chromium_shows_the_burst_first_and_stays_inert() {
    let browser = chromium();
    if !crate::support::tools::available(
        "browser::the_page_in_chromium_shows_the_burst_first_and_stays_inert",
        browser.is_some(),
        "SATGATE_REQUIRE_TOOLS",
        "chromium is not installed (apt-get install chromium)",
    ) {
        return;
    }
    let browser = browser.unwrap();
    // Anything the page loaded would connect here.
    let trap = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    trap.set_nonblocking(true).unwrap();
    let trap_addr = trap.local_addr().unwrap().to_string();
    let (records, inventory, [sub, role, party], burst_device) = demo_data(&trap_addr);
    let dir = tempfile::tempdir().unwrap();
    let inventory_file = dir.path().join("inventory.json");
    std::fs::write(&inventory_file, inventory).unwrap();

    let mut child = Command::new(env!("CARGO_BIN_EXE_satgate"))
        .args(["activity", "--format", "html", "--inventory"])
        .arg(&inventory_file)
        .args(["--sub", &sub, "--role", &role, "--party", &party])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || stdin.write_all(records.as_bytes()));
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let page = dir.path().join("activity.html");
    std::fs::write(&page, &out.stdout).unwrap();

    let profile = dir.path().join("profile");
    let dumped = run_chromium(&browser, &profile, &page, &["--dump-dom"]);
    assert!(dumped.status.success(), "{}", String::from_utf8_lossy(&dumped.stderr));
    let dom = Html::parse_document(&String::from_utf8(dumped.stdout).unwrap());
    let select = |s: &str| Selector::parse(s).unwrap();

    // No hostile title ran (it would have set the title) or became markup.
    let title: String = dom.select(&select("title")).next().unwrap().text().collect();
    assert!(title.starts_with("Device activity"), "{title}");
    for tag in ["script", "img", "iframe", "link"] {
        assert_eq!(dom.select(&select(tag)).count(), 0, "a <{tag}> in the DOM");
    }
    assert_eq!(dom.select(&select("style")).count(), 1);
    for e in dom.root_element().descendants().filter_map(ElementRef::wrap) {
        for (name, value) in e.value().attrs() {
            assert!(
                !name.starts_with("on") && !value.contains("evil.example"),
                "{name}={value}"
            );
        }
    }
    let cells: Vec<String> = dom.select(&select("td")).map(|td| td.text().collect()).collect();
    for h in HOSTILE {
        assert!(cells.iter().any(|c| c == h), "{h:?} not shown as text");
    }

    // The erratic Device comes first; its chart has a bar group per day, the burst day marked.
    let first = dom.select(&select("section.device")).next().expect("a flagged Device");
    assert_eq!(first.value().id(), Some(format!("d-{burst_device}").as_str()));
    let days: Vec<ElementRef> = first.select(&select("svg g.day")).collect();
    assert_eq!(days.len(), 28, "one bar group per day of November 1-28");
    let marked: Vec<&str> = days
        .iter()
        .filter(|g| g.value().classes().any(|c| c == "flagged"))
        .filter_map(|g| g.value().attr("data-day"))
        .collect();
    assert_eq!(marked, ["2026-11-28"]);
    let burst = days.last().unwrap();
    assert!(burst.select(&select("rect")).count() > 0, "the burst day has bars");
    assert_eq!(first.select(&select("svg line.threshold")).count(), 1);
    // Nothing on the page asked for anything.
    assert!(
        matches!(trap.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the page made a request"
    );

    // A screenshot to look at, kept where CI can collect it.
    let shot = dir.path().join("activity.png");
    let taken = run_chromium(
        &browser,
        &profile,
        &page,
        &[&format!("--screenshot={}", shot.display()), "--window-size=900,1100"],
    );
    assert!(taken.status.success(), "{}", String::from_utf8_lossy(&taken.stderr));
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{} bytes", png.len());
    let kept = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&kept).unwrap();
    std::fs::write(kept.join("activity.png"), &png).unwrap();
    std::fs::write(kept.join("activity.html"), &out.stdout).unwrap();
}

/// The burst Device's timeline, as `/sat/records?deviceId=...` gives a browser the Supplier: in
/// Chromium's DOM, the rows are in time order and each alert is followed by the other Users'
/// records of the hour before it, every one of them earlier than the alert.
#[test]
fn the_timeline_in_chromium_puts_each_alert_after_what_preceded_it() {
    let browser = chromium();
    if !crate::support::tools::available(
        "browser::the_timeline_in_chromium_puts_each_alert_after_what_preceded_it",
        browser.is_some(),
        "SATGATE_REQUIRE_TOOLS",
        "chromium is not installed (apt-get install chromium)",
    ) {
        return;
    }
    let browser = browser.unwrap();
    let (records, inventory, [sub, role, party], burst_device) = demo_data("127.0.0.1:9");
    let principal = satgate::model::Principal::from_claims(&sub, &role, &party).unwrap();
    let (inventory, _) = satgate::ownership::Inventory::parse(&inventory).unwrap();
    let device = satgate::model::Eui64::parse(&burst_device).unwrap();
    let timeline = Timeline::new(device).for_caller(principal.user_id);
    let filter = RecordFilter::new(crate::support::engine().for_principal(&principal), timeline);
    let (_, filter) = filter_all(filter, records.as_bytes(), |id| inventory.get(id).cloned());

    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("timeline.html");
    std::fs::write(&page, filter.sink().page()).unwrap();
    let dumped = run_chromium(&browser, &dir.path().join("profile"), &page, &["--dump-dom"]);
    assert!(dumped.status.success(), "{}", String::from_utf8_lossy(&dumped.stderr));
    let dom = Html::parse_document(&String::from_utf8(dumped.stdout).unwrap());
    let select = |s: &str| Selector::parse(s).unwrap();
    assert_eq!(dom.select(&select("script")).count(), 0);

    let rows: Vec<ElementRef> = dom.select(&select("tbody > tr")).collect();
    let time_of = |row: &ElementRef| -> String { row.select(&select("td")).next().unwrap().text().collect() };
    let mut last = String::new();
    let mut alerts_with_requests_before = 0;
    for (i, row) in rows.iter().enumerate() {
        if row.value().classes().any(|c| c == "before") {
            continue;
        }
        let at = time_of(row);
        assert!(at >= last, "rows out of time order: {at} after {last}");
        last = at.clone();
        if !row.value().classes().any(|c| c == "alert") {
            continue;
        }
        let before = rows.get(i + 1).expect("a list after each alert");
        assert!(before.value().classes().any(|c| c == "before"));
        let listed: Vec<String> = before.select(&select("li")).map(|li| li.text().collect()).collect();
        for item in &listed {
            let when = item.split(' ').next().unwrap();
            assert!(when <= at.as_str(), "{item} listed before an alert at {at}");
        }
        if !listed.is_empty() {
            alerts_with_requests_before += 1;
        }
    }
    assert!(
        alerts_with_requests_before > 0,
        "the burst's alerts follow other Users' records"
    );

    let shot = dir.path().join("timeline.png");
    let taken = run_chromium(
        &browser,
        &dir.path().join("profile"),
        &page,
        &[&format!("--screenshot={}", shot.display()), "--window-size=900,1100"],
    );
    assert!(taken.status.success(), "{}", String::from_utf8_lossy(&taken.stderr));
    let kept = Path::new(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&kept).unwrap();
    std::fs::copy(&shot, kept.join("timeline.png")).unwrap();
}
