//! Reading the body of an outbound HTTP answer (BoA, Intuit) with a size cap, chunk by chunk,
//! so a misbehaving or hostile server can never make the daemon buffer without bound
//! (SPEC §9). Each adapter maps [`CapError`] into its own error enum.

/// Why a capped body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CapError {
    /// The answer is larger than the cap (announced by `Content-Length` or seen while reading).
    #[error("the answer is larger than {} (the cap for this kind of answer)", human(*limit))]
    TooLarge {
        /// The cap in bytes.
        limit: usize,
    },
    /// The connection failed while reading.
    #[error(transparent)]
    Read(#[from] reqwest::Error),
}

impl CapError {
    /// Whether the cap was exceeded.
    pub fn is_too_large(&self) -> bool {
        matches!(self, CapError::TooLarge { .. })
    }
}

/// `n` bytes as MiB/KiB/bytes for messages.
pub fn human(n: usize) -> String {
    if n >= 1 << 20 && n % (1 << 20) == 0 {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n % (1 << 10) == 0 {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

/// Reads `resp`'s body, at most `limit` bytes. Refuses at once when `Content-Length` is over
/// the cap, and otherwise stops reading as soon as the chunks received pass it.
///
/// # Errors
/// [`CapError::TooLarge`] over the cap; [`CapError::Read`] when the connection fails.
pub async fn read_capped(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, CapError> {
    let announced = resp.content_length().unwrap_or(0);
    if announced > limit as u64 {
        return Err(CapError::TooLarge { limit });
    }
    // Never trust the announced length for more than the cap.
    let mut out = Vec::with_capacity(usize::try_from(announced).unwrap_or(0).min(limit));
    while let Some(chunk) = resp.chunk().await? {
        if out.len() + chunk.len() > limit {
            return Err(CapError::TooLarge { limit });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Installs rustls' ring crypto provider once (reqwest is built without a default provider).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-shot HTTP server on 127.0.0.1:0 that answers every connection with `status`,
    /// `headers` and `body` sent in 8 KiB chunks (chunked encoding unless a Content-Length is
    /// given). Returns its base URL.
    pub(crate) async fn serve_once(status: u16, headers: &str, body: Vec<u8>) -> String {
        install_crypto_provider();
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let headers = headers.to_string();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let headers = headers.clone();
                let body = body.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let chunked = !headers.to_ascii_lowercase().contains("content-length");
                    let head = format!(
                        "HTTP/1.1 {status} X\r\n{headers}{}connection: close\r\n\r\n",
                        if chunked {
                            "transfer-encoding: chunked\r\n"
                        } else {
                            ""
                        }
                    );
                    if s.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    for c in body.chunks(8192) {
                        let r = if chunked {
                            let mut framed = format!("{:x}\r\n", c.len()).into_bytes();
                            framed.extend_from_slice(c);
                            framed.extend_from_slice(b"\r\n");
                            s.write_all(&framed).await
                        } else {
                            s.write_all(c).await
                        };
                        if r.is_err() {
                            return;
                        }
                    }
                    if chunked {
                        let _ = s.write_all(b"0\r\n\r\n").await;
                    }
                });
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn bodies_over_the_cap_are_refused_while_reading() {
        let url = serve_once(200, "", vec![b'x'; 1 << 20]).await;
        let resp = reqwest::get(&url).await.unwrap();
        let e = read_capped(resp, 64 * 1024).await.unwrap_err();
        assert!(e.is_too_large(), "{e}");
        assert_eq!(
            e.to_string(),
            "the answer is larger than 64 KiB (the cap for this kind of answer)"
        );

        let url = serve_once(200, "", vec![b'y'; 64 * 1024]).await;
        let resp = reqwest::get(&url).await.unwrap();
        assert_eq!(read_capped(resp, 64 * 1024).await.unwrap().len(), 64 * 1024);
    }

    #[tokio::test]
    async fn an_announced_length_over_the_cap_is_refused_before_reading() {
        let url = serve_once(200, "content-length: 5000000\r\n", vec![b'z'; 10]).await;
        let resp = reqwest::get(&url).await.unwrap();
        assert!(read_capped(resp, 4 << 20).await.unwrap_err().is_too_large());
        assert_eq!(human(4 << 20), "4 MiB");
        assert_eq!(human(100), "100 bytes");
    }
}
