//! The security edge: TLS on the listener (with certificate reload), TLS material for the
//! back ends, JWT and API-key authentication of clients, the per-IP connection rate limit, and the
//! per-key caps on concurrent connections, handshakes and sessions ([`quota`]).
//!
//! Nothing here logs a token, a key or a secret: errors name the file and the problem,
//! authentication failures only their reason.

pub mod apikeys;
pub mod auth;
pub mod files;
pub mod quota;
pub mod ratelimit;
pub mod reload;
pub mod tls;
