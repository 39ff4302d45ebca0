//! Opening a v1 WebSocket as a client: `ws://` or `wss://` (system roots plus an optional
//! CA file, e.g. the development CA of `scripts/gen-certs.sh`), with a bearer token.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use speech_gateway::security::files;

/// A client socket to the gateway.
pub type ClientSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connects to `url`, sending `Authorization: Bearer <token>` if given. For `wss://`, the
/// server certificate must chain to the system's roots or to `ca`.
pub async fn open(
    url: &str,
    token: Option<&str>,
    ca: Option<&Path>,
) -> anyhow::Result<ClientSocket> {
    let mut request = url
        .into_client_request()
        .with_context(|| format!("invalid gateway URL {url}"))?;
    if let Some(token) = token {
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .context("the token is not a valid header value")?;
        request.headers_mut().insert(AUTHORIZATION, value);
    }
    let connector = if url.starts_with("wss://") {
        Some(Connector::Rustls(Arc::new(files::client_config(ca)?)))
    } else {
        None
    };
    let (ws, _response) =
        tokio_tungstenite::connect_async_tls_with_config(request, None, true, connector)
            .await
            .with_context(|| format!("cannot connect to {url}"))?;
    Ok(ws)
}
