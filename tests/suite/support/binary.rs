//! The real `satgate serve` binary as a child process, for tests that measure it from outside
//! (memory, descriptors) or need its own listeners. It is killed when the test ends.

use std::net::SocketAddr;
use std::time::Duration;

pub struct Satgate {
    child: std::process::Child,
    pub listen: SocketAddr,
    pub ops: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Satgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `satgate serve` on free loopback ports (callers and operations), the test HS256 secret, and
/// `args`; returns once both listeners accept (within 30 s: a debug build checking its policy
/// set while other tests build and run takes a while).
pub async fn spawn(args: &[&str]) -> Satgate {
    spawn_with(args, |_| {}).await
}

/// Like [`spawn`], with the command changed by `tweak` first (its limits, its output).
pub async fn spawn_with(args: &[&str], tweak: impl FnOnce(&mut std::process::Command)) -> Satgate {
    spawn_command("serve", args, tweak).await
}

/// `satgate ext-proc`, as [`spawn`] starts `serve`: `listen` is its gRPC address.
pub async fn spawn_ext_proc(args: &[&str]) -> Satgate {
    spawn_command("ext-proc", args, |_| {}).await
}

/// `satgate ext-proc` with no JWT key argument of its own (`args` say how tokens are checked).
pub async fn spawn_command_ext_proc_without_key(args: &[&str]) -> Satgate {
    spawn_keyed("ext-proc", args, |_| {}, false).await
}

async fn spawn_command(command_name: &str, args: &[&str], tweak: impl FnOnce(&mut std::process::Command)) -> Satgate {
    spawn_keyed(command_name, args, tweak, true).await
}

async fn spawn_keyed(
    command_name: &str,
    args: &[&str],
    tweak: impl FnOnce(&mut std::process::Command),
    keyed: bool,
) -> Satgate {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, super::SECRET).unwrap();
    let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let ops: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_satgate"));
    command
        .args([
            command_name,
            "--listen",
            &listen.to_string(),
            "--ops-listen",
            &ops.to_string(),
        ])
        .args(args)
        .env("RUST_LOG", "error");
    if keyed {
        command.args(["--jwt-hs256-secret-file", secret.to_str().unwrap()]);
    }
    tweak(&mut command);
    let child = command.spawn().unwrap();
    let s = Satgate {
        child,
        listen,
        ops,
        _dir: dir,
    };
    for addr in [listen, ops] {
        let mut up = false;
        // Start-up includes the policy guard (about 2 s of CPU in a debug build): generous on a
        // loaded machine.
        for _ in 0..600 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                up = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(up, "satgate {command_name} did not start on {addr}");
    }
    s
}

impl Satgate {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        let _ = self.child.wait();
    }

    fn status_kib(&self, field: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    pub fn open_fds(&self) -> u64 {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id())).map_or(0, |d| d.count() as u64)
    }
}
