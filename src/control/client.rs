//! The admin client side of the control socket (CLI and tests).

use std::path::Path;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::{Request, Response};

/// Client failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No daemon answers on the socket.
    #[error("cannot reach the boa-exchange daemon at {path}: {source} (is `boa-exchange serve` running, and may you use its socket?)")]
    Unreachable {
        /// The socket path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The connection broke or the answer was not JSON.
    #[error("control socket: {0}")]
    Protocol(String),
}

/// A connection to the daemon.
pub struct Client {
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
}

impl Client {
    /// Connects to the socket.
    ///
    /// # Errors
    /// [`Error::Unreachable`].
    pub async fn connect(path: &Path) -> Result<Client, Error> {
        let s = UnixStream::connect(path)
            .await
            .map_err(|source| Error::Unreachable {
                path: path.display().to_string(),
                source,
            })?;
        let (r, w) = s.into_split();
        Ok(Client {
            reader: BufReader::new(r),
            writer: w,
        })
    }

    /// Sends one request; returns the raw answer line and its parsed form.
    ///
    /// # Errors
    /// [`Error::Protocol`] on a broken connection or a non-JSON answer.
    pub async fn call(&mut self, cmd: &str, args: Value) -> Result<(String, Response), Error> {
        let req = Request {
            cmd: cmd.to_string(),
            args,
        };
        let mut line = serde_json::to_string(&req).map_err(|e| Error::Protocol(e.to_string()))?;
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .await
            .map_err(|e| Error::Protocol(e.to_string()))?;
        self.call_raw_read().await
    }

    /// Sends one request without reading its answer (a streamed answer: read it with
    /// [`Client::read_line`] and [`Client::raw_line`]).
    ///
    /// # Errors
    /// [`Error::Protocol`] on a broken connection.
    pub async fn send(&mut self, cmd: &str, args: Value) -> Result<(), Error> {
        let req = Request {
            cmd: cmd.to_string(),
            args,
        };
        let mut line = serde_json::to_string(&req).map_err(|e| Error::Protocol(e.to_string()))?;
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .await
            .map_err(|e| Error::Protocol(e.to_string()))
    }

    /// Reads one answer line and parses it.
    ///
    /// # Errors
    /// [`Error::Protocol`] on a broken connection or a non-JSON answer.
    pub async fn read_line(&mut self) -> Result<(String, Response), Error> {
        self.call_raw_read().await
    }

    /// Reads the next line of a stream as bytes, with its `\n` (`buf` is cleared first;
    /// empty at the end), at most `max` bytes.
    ///
    /// # Errors
    /// [`Error::Protocol`] on a broken connection.
    pub async fn raw_line(&mut self, buf: &mut Vec<u8>, max: usize) -> Result<(), Error> {
        use tokio::io::AsyncReadExt as _;
        buf.clear();
        (&mut self.reader)
            .take(max as u64 + 1)
            .read_until(b'\n', buf)
            .await
            .map_err(|e| Error::Protocol(e.to_string()))?;
        Ok(())
    }

    /// Reads one answer line.
    async fn call_raw_read(&mut self) -> Result<(String, Response), Error> {
        let mut answer = String::new();
        let n = self
            .reader
            .read_line(&mut answer)
            .await
            .map_err(|e| Error::Protocol(e.to_string()))?;
        if n == 0 {
            return Err(Error::Protocol("the daemon closed the connection".into()));
        }
        let answer = answer.trim_end().to_string();
        let parsed = serde_json::from_str(&answer)
            .map_err(|e| Error::Protocol(format!("bad answer: {e}")))?;
        Ok((answer, parsed))
    }
}
