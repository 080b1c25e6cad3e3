//! `InProcDaemon`: the daemon's real `app::run` inside the test process, with an injected
//! manual clock (for schedules, expiries and dates). Same listeners, store and code paths as
//! the binary; only the clock and the signal source differ.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use boa_exchange::app::{self, Listeners};
use boa_exchange::config::{Config, ProcessEnv};
use boa_exchange::shutdown::Event;
use boa_exchange::time::clock::ManualClock;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::eventually::eventually_async;

pub struct InProcDaemon {
    pub dir: tempfile::TempDir,
    pub clock: ManualClock,
    pub http: String,
    pub socket: PathBuf,
    tx: tokio::sync::mpsc::UnboundedSender<Event>,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub toml: String,
}

impl InProcDaemon {
    /// Starts `run` with `toml` (paths and listen address are filled in) and `clock`.
    pub async fn start(toml: &str, clock: ManualClock) -> InProcDaemon {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::start_in(dir, toml, clock).await
    }

    pub async fn start_in(dir: tempfile::TempDir, toml: &str, clock: ManualClock) -> InProcDaemon {
        let socket = dir.path().join("control.sock");
        let full = format!(
            "{toml}\n[storage]\ndata_dir = \"{}\"\n[control]\nsocket = \"{}\"\n",
            dir.path().join("data").display(),
            socket.display()
        );
        let config = Config::from_toml(&full, "inproc.toml", None, &ProcessEnv).expect("config");
        boa_exchange::store::prepare_data_dir(&config.storage.data_dir).expect("data dir");
        let http = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = http.local_addr().expect("addr");
        let control = boa_exchange::control::server::bind(&socket).expect("socket");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let handle = tokio::spawn(app::run(
            config,
            Listeners { http, control },
            rx,
            None,
            Arc::new(clock.clone()),
        ));
        let d = InProcDaemon {
            dir,
            clock,
            http: format!("http://{addr}"),
            socket,
            tx,
            handle: Some(handle),
            toml: toml.to_string(),
        };
        // Ready when the control socket answers.
        eventually_async(
            Duration::from_secs(10),
            "the in-process daemon's control socket to answer",
            async || d.try_control("status", json!({})).await.is_some(),
        )
        .await;
        d
    }

    async fn try_control(&self, cmd: &str, args: Value) -> Option<Value> {
        let s = tokio::net::UnixStream::connect(&self.socket).await.ok()?;
        let (r, mut w) = s.into_split();
        let line = json!({"cmd": cmd, "args": args}).to_string() + "\n";
        w.write_all(line.as_bytes()).await.ok()?;
        let mut r = BufReader::new(r);
        let mut a = String::new();
        r.read_line(&mut a).await.ok()?;
        serde_json::from_str(&a).ok()
    }

    pub async fn control(&self, cmd: &str, args: Value) -> Value {
        self.try_control(cmd, args).await.expect("control answer")
    }

    /// Stops the daemon (as SIGTERM would) and waits for it; returns the data dir.
    pub async fn stop(mut self) -> tempfile::TempDir {
        let _ = self.tx.send(Event::Stop("test"));
        if let Some(h) = self.handle.take() {
            let r = tokio::time::timeout(Duration::from_secs(30), h)
                .await
                .expect("stopped in time")
                .expect("join");
            r.expect("clean exit");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self.dir, dir)
    }
}

impl Drop for InProcDaemon {
    fn drop(&mut self) {
        let _ = self.tx.send(Event::Stop("drop"));
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}
