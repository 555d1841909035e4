//! A `redis-server` of the bench's own on a free loopback port, memory only, killed when
//! dropped. Found on PATH or at `HOLDFAST_REDIS_SERVER`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts one, or `None` (with the reason printed) when there is no `redis-server`.
    pub fn start() -> Option<RedisServer> {
        let binary = std::env::var_os("HOLDFAST_REDIS_SERVER").map(PathBuf::from).or_else(|| {
            std::env::var_os("PATH")?
                .to_str()?
                .split(':')
                .map(|d| Path::new(d).join("redis-server"))
                .find(|p| p.is_file())
        });
        let Some(binary) = binary else {
            eprintln!("SKIPPED the Redis scenarios: redis-server is not installed (or set HOLDFAST_REDIS_SERVER)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(binary)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let server = RedisServer { child, port, _dir: dir };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "redis-server did not come up on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
