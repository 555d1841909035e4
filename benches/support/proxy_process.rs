//! A real `holdfast serve` for the benches: a child process on a free loopback port, with a
//! store in a temp dir, in front of one OpenAI-dialect upstream. Killed when dropped.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

pub struct Proxy {
    pub child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `binary` as `holdfast serve` in front of `upstream`; `extra` is appended to its
/// configuration (e.g. a `[limits]` section). Returns once it accepts connections.
pub async fn start(binary: &str, upstream: SocketAddr, extra: &str) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port();
    let config = format!(
        "listen = \"127.0.0.1:{port}\"\n[log]\nlevel = \"error\"\n[store]\npath = \"{}\"\n{extra}\n\
         [[providers]]\nname = \"fake\"\napi = \"openai\"\nbase_url = \"http://{upstream}\"\nmodels = [\"*\"]\n",
        dir.path().join("store").display()
    );
    std::fs::write(dir.path().join("holdfast.toml"), config).unwrap();
    let child = Command::new(binary)
        .current_dir(dir.path())
        .arg("serve")
        .env("HOLDFAST_KEY", "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=")
        .env_remove("HOLDFAST_PASSPHRASE")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start holdfast");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // From here the Proxy owns the child, and its Drop kills and waits for it.
    let proxy = Proxy { child, addr, _dir: dir };
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_ok() {
            return proxy;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("holdfast did not start listening");
}
