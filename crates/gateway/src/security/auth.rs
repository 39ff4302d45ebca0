//! JWT authentication of WebSocket clients, before the upgrade.
//!
//! A token comes in `Authorization: Bearer <jwt>` or, for clients that cannot set headers
//! (browsers' WebSocket API), as `?token=<jwt>` (`auth.query_token`). It is accepted when:
//!
//! - its header's `alg` is HS256, RS256 or ES256 **and** a configured key of that kind
//!   exists (an HS256 secret; RSA or P-256 public keys from PEM files or a JWKS file) —
//!   `none`, and an algorithm no key is configured for, are refused;
//! - the signature verifies with one of those keys (with a `kid` in the header, only the
//!   keys carrying that `kid` — PEM keys have none — are tried);
//! - `exp` is present and not past, `nbf` (if present) is not in the future, both with
//!   `auth.leeway` of clock skew;
//! - `aud` names one of `auth.audience` and `iss` is one of `auth.issuer`, when those
//!   lists are set: then the claim is required, and must be a string (`aud` may also be
//!   a list of strings) — a token without it, or with a number or `null` in its place,
//!   is refused, so a token minted for another service of the same issuer gets nowhere.
//!
//! An API key (`auth.api_keys_file`, [`super::apikeys`]) is accepted in the same places:
//! a credential that is not shaped like a JWT (three dot-separated parts) is looked up by
//! its SHA-256 among the listed keys.
//!
//! Keys are re-read on SIGHUP and when their files change ([`super::reload`]), so a JWKS
//! rotation needs no restart. The token, the secret and the claims are never logged;
//! refusals are logged and counted by [`AuthError::reason`] only.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::apikeys::{ApiKeys, KeyIdentity};
use super::files::{self, FileError};
use super::reload::{FileStamp, Reloadable};
use crate::config::{AuthSettings, MIN_HS256_SECRET};

/// Why a token was refused. The reason is a bounded label; the message is for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    Missing,
    Malformed,
    AlgorithmNotAllowed,
    UnknownKey,
    BadSignature,
    Expired,
    NotYetValid,
    WrongAudience,
    WrongIssuer,
    MissingClaim,
    UnknownApiKey,
}

impl AuthError {
    /// Metric label and log field.
    pub fn reason(self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed => "malformed",
            AuthError::AlgorithmNotAllowed => "algorithm",
            AuthError::UnknownKey => "unknown_key",
            AuthError::BadSignature => "signature",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::WrongAudience => "audience",
            AuthError::WrongIssuer => "issuer",
            AuthError::MissingClaim => "missing_claim",
            AuthError::UnknownApiKey => "api_key",
        }
    }

    /// What the client is told (never the expected values).
    pub fn message(self) -> &'static str {
        match self {
            AuthError::Missing => {
                "authentication required: send Authorization: Bearer <token> or ?token=<token>"
            }
            AuthError::Malformed => "the token is not a well-formed JWT",
            AuthError::AlgorithmNotAllowed => "the token's signing algorithm is not accepted",
            AuthError::UnknownKey => "the token's key is not known to this gateway",
            AuthError::BadSignature => "the token's signature does not verify",
            AuthError::Expired => "the token has expired",
            AuthError::NotYetValid => "the token is not valid yet (nbf)",
            AuthError::WrongAudience => {
                "the token is not meant for this service (aud missing or not accepted)"
            }
            AuthError::WrongIssuer => {
                "the token's issuer is not accepted (iss missing or not accepted)"
            }
            AuthError::MissingClaim => "the token lacks a required claim (exp)",
            AuthError::UnknownApiKey => "the API key is not known to this gateway",
        }
    }
}

/// What an accepted token tells the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The `sub` claim (at most 256 characters kept), for `limits.max_sessions_per_subject`.
    pub subject: Option<String>,
    /// The API key's entry, when the credential was an API key.
    pub key: Option<Arc<KeyIdentity>>,
}

/// One verification key.
struct Key {
    alg: Algorithm,
    kid: Option<String>,
    key: DecodingKey,
}

/// The configured keys, loaded from their sources.
struct KeySet {
    keys: Vec<Key>,
}

/// Verifies tokens against the configured keys and claims.
pub struct Authenticator {
    settings: AuthSettings,
    keys: RwLock<Arc<KeySet>>,
    stamp: FileStamp,
    api_keys: Option<Arc<ApiKeys>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("keys", &self.keys.read().map(|k| k.keys.len()).unwrap_or(0))
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Loads every configured key; any unusable file stops start-up with its name.
    pub fn load(settings: &AuthSettings) -> Result<Authenticator, FileError> {
        let keys = load_keys(settings)?;
        let files: Vec<&Path> = key_files(settings);
        let api_keys = match &settings.api_keys_file {
            Some(file) => Some(Arc::new(ApiKeys::load(file)?)),
            None => None,
        };
        Ok(Authenticator {
            settings: settings.clone(),
            keys: RwLock::new(Arc::new(keys)),
            stamp: FileStamp::new(&files),
            api_keys,
        })
    }

    /// How many JWT verification keys are loaded (for the start-up log).
    pub fn key_count(&self) -> usize {
        self.keys.read().expect("keys lock").keys.len()
    }

    /// The API keys, if `auth.api_keys_file` is set (reloaded on their own).
    pub fn api_keys(&self) -> Option<&Arc<ApiKeys>> {
        self.api_keys.as_ref()
    }

    /// Checks one credential — a JWT, or an API key when a key file is configured; on
    /// success, what the gateway needs to know of it.
    pub fn verify(&self, token: &str) -> Result<Verified, AuthError> {
        if !looks_like_jwt(token) {
            let Some(api_keys) = &self.api_keys else {
                return Err(AuthError::Malformed);
            };
            return match api_keys.lookup(token) {
                Some(key) => Ok(Verified {
                    subject: None,
                    key: Some(key),
                }),
                None => Err(AuthError::UnknownApiKey),
            };
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        if !matches!(
            header.alg,
            Algorithm::HS256 | Algorithm::RS256 | Algorithm::ES256
        ) {
            return Err(AuthError::AlgorithmNotAllowed);
        }
        let keys = self.keys.read().expect("keys lock").clone();
        let of_alg: Vec<&Key> = keys.keys.iter().filter(|k| k.alg == header.alg).collect();
        if of_alg.is_empty() {
            return Err(AuthError::AlgorithmNotAllowed);
        }
        // A `kid` selects the keys carrying it; keys without a `kid` (PEM files, the
        // HS256 secret) are tried for a `kid` no key carries.
        let candidates: Vec<&Key> = match &header.kid {
            Some(kid) if of_alg.iter().any(|k| k.kid.as_deref() == Some(kid)) => of_alg
                .into_iter()
                .filter(|k| k.kid.as_deref() == Some(kid.as_str()))
                .collect(),
            Some(_) => of_alg.into_iter().filter(|k| k.kid.is_none()).collect(),
            None => of_alg,
        };
        if candidates.is_empty() {
            return Err(AuthError::UnknownKey);
        }
        let validation = self.validation(header.alg);
        let mut last = AuthError::BadSignature;
        for key in candidates {
            match jsonwebtoken::decode::<serde_json::Value>(token, &key.key, &validation) {
                Ok(data) => return self.check_claims(&data.claims),
                Err(e) => {
                    use jsonwebtoken::errors::ErrorKind as K;
                    last = match e.kind() {
                        K::InvalidSignature => AuthError::BadSignature,
                        K::ExpiredSignature => AuthError::Expired,
                        K::ImmatureSignature => AuthError::NotYetValid,
                        K::InvalidAudience => AuthError::WrongAudience,
                        K::InvalidIssuer => AuthError::WrongIssuer,
                        K::MissingRequiredClaim(_) => AuthError::MissingClaim,
                        K::InvalidAlgorithm | K::MissingAlgorithm => AuthError::AlgorithmNotAllowed,
                        _ => AuthError::Malformed,
                    };
                    // Claims are checked after the signature: a claim error means this
                    // key verified the token, so no other key will do better.
                    if last != AuthError::BadSignature {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }

    /// Signature, `exp` and `nbf` are checked by the library; `aud` and `iss` here, in
    /// [`Self::check_claims`], because the library skips a claim of the wrong JSON type.
    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = self.settings.leeway.as_secs();
        v.validate_exp = true;
        v.validate_nbf = true;
        v.required_spec_claims = ["exp".to_string()].into_iter().collect();
        v.validate_aud = false;
        v
    }

    /// With `auth.audience` set, `aud` must be present and be one of them (a string, or a
    /// list of strings of which one is); with `auth.issuer` set, `iss` must be a string
    /// among them. Anything else — absent, `null`, a number — is refused.
    fn check_claims(&self, claims: &serde_json::Value) -> Result<Verified, AuthError> {
        use serde_json::Value;
        let wanted = &self.settings.audience;
        if !wanted.is_empty() {
            let ok = match claims.get("aud") {
                Some(Value::String(a)) => wanted.contains(a),
                Some(Value::Array(list)) => list
                    .iter()
                    .any(|a| a.as_str().is_some_and(|a| wanted.iter().any(|w| w == a))),
                _ => false,
            };
            if !ok {
                return Err(AuthError::WrongAudience);
            }
        }
        let wanted = &self.settings.issuer;
        if !wanted.is_empty() {
            let ok = matches!(claims.get("iss"), Some(Value::String(i)) if wanted.contains(i));
            if !ok {
                return Err(AuthError::WrongIssuer);
            }
        }
        let subject = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => Some(s.chars().take(256).collect()),
            _ => None,
        };
        Ok(Verified { subject, key: None })
    }
}

impl Reloadable for Authenticator {
    fn what(&self) -> &'static str {
        "auth_keys"
    }

    fn changed(&self) -> bool {
        self.stamp.changed()
    }

    fn reload(&self) -> Result<(), FileError> {
        self.stamp.refresh();
        let keys = load_keys(&self.settings)?;
        *self.keys.write().expect("keys lock") = Arc::new(keys);
        Ok(())
    }
}

/// A JWT in compact form has three dot-separated parts; API keys have no dots.
fn looks_like_jwt(token: &str) -> bool {
    token.bytes().filter(|&b| b == b'.').count() == 2
}

fn key_files(s: &AuthSettings) -> Vec<&Path> {
    let mut files: Vec<&Path> = s.public_keys.iter().map(PathBuf::as_path).collect();
    files.extend(s.jwks.as_deref());
    files.extend(s.hs256_secret_file.as_deref());
    files
}

fn load_keys(s: &AuthSettings) -> Result<KeySet, FileError> {
    let mut keys = Vec::new();
    let bad = |file: &Path, problem: String| FileError {
        file: file.to_path_buf(),
        problem,
    };
    if let Some(secret) = &s.hs256_secret {
        keys.push(Key {
            alg: Algorithm::HS256,
            kid: None,
            key: DecodingKey::from_secret(secret.0.as_bytes()),
        });
    }
    if let Some(file) = &s.hs256_secret_file {
        let raw = files::read(file)?;
        let secret = trim_newline(&raw);
        if secret.len() < MIN_HS256_SECRET {
            return Err(bad(
                file,
                format!("the HS256 secret must be at least {MIN_HS256_SECRET} bytes"),
            ));
        }
        keys.push(Key {
            alg: Algorithm::HS256,
            kid: None,
            key: DecodingKey::from_secret(secret),
        });
    }
    for file in &s.public_keys {
        let pem = files::read(file)?;
        let key = if let Ok(k) = DecodingKey::from_rsa_pem(&pem) {
            Key {
                alg: Algorithm::RS256,
                kid: None,
                key: k,
            }
        } else if let Ok(k) = DecodingKey::from_ec_pem(&pem) {
            Key {
                alg: Algorithm::ES256,
                kid: None,
                key: k,
            }
        } else {
            return Err(bad(
                file,
                "not an RSA or EC (P-256) public key or certificate in PEM".into(),
            ));
        };
        keys.push(key);
    }
    if let Some(file) = &s.jwks {
        let raw = files::read(file)?;
        let set: JwkSet = serde_json::from_slice(&raw)
            .map_err(|e| bad(file, format!("not a JWKS document: {e}")))?;
        let before = keys.len();
        for jwk in &set.keys {
            let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
                (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
                (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
                    if ec.curve == EllipticCurve::P256 =>
                {
                    Algorithm::ES256
                }
                // Other key types or algorithms are not accepted; skipping them lets a
                // shared JWKS carry keys for other services.
                _ => continue,
            };
            let key = DecodingKey::from_jwk(jwk)
                .map_err(|e| bad(file, format!("unusable key in the JWKS: {e}")))?;
            keys.push(Key {
                alg,
                kid: jwk.common.key_id.clone(),
                key,
            });
        }
        if keys.len() == before {
            return Err(bad(file, "holds no RS256 or ES256 (P-256) key".into()));
        }
    }
    Ok(KeySet { keys })
}

fn trim_newline(raw: &[u8]) -> &[u8] {
    let mut end = raw.len();
    while end > 0 && matches!(raw[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    &raw[..end]
}

/// The token of a request: `Authorization: Bearer …` first, then `?token=` if allowed.
pub fn token_from<'a>(
    authorization: Option<&'a str>,
    query_token: Option<&'a str>,
    allow_query: bool,
) -> Option<&'a str> {
    if let Some(h) = authorization {
        let (scheme, rest) = h.trim().split_once(' ')?;
        if scheme.eq_ignore_ascii_case("bearer") && !rest.trim().is_empty() {
            return Some(rest.trim());
        }
        return None;
    }
    if allow_query {
        return query_token.filter(|t| !t.is_empty());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use jsonwebtoken::{EncodingKey, Header};

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn settings() -> AuthSettings {
        AuthSettings {
            enabled: true,
            hs256_secret: Some(crate::config::Secret(SECRET.into())),
            hs256_secret_file: None,
            public_keys: vec![],
            jwks: None,
            api_keys_file: None,
            audience: vec!["speech".into()],
            issuer: vec!["https://issuer.example".into()],
            leeway: Duration::from_secs(5),
            query_token: true,
        }
    }

    fn now() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    fn token(claims: serde_json::Value, secret: &str) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn good_claims() -> serde_json::Value {
        serde_json::json!({"sub": "u1", "aud": "speech", "iss": "https://issuer.example", "exp": now() + 60})
    }

    #[test]
    fn api_keys_and_jwts_side_by_side() {
        use crate::security::apikeys;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys.toml");
        let key = apikeys::generate().unwrap();
        std::fs::write(&file, apikeys::entry("app", &key, 2)).unwrap();
        let mut s = settings();
        s.api_keys_file = Some(file);
        let auth = Authenticator::load(&s).unwrap();
        let v = auth.verify(&key).unwrap();
        assert_eq!(v.subject, None);
        assert_eq!(
            v.key.as_deref().map(|k| (&*k.name, k.max_sessions)),
            Some(("app", 2))
        );
        assert_eq!(
            auth.verify("sgw_0000").map(|_| ()),
            Err(AuthError::UnknownApiKey)
        );
        // A JWT is still a JWT (and says nothing of API keys).
        let jwt = auth.verify(&token(good_claims(), SECRET)).unwrap();
        assert_eq!(jwt.key, None);
        // Without a key file, a credential that is not a JWT is malformed.
        let plain = Authenticator::load(&settings()).unwrap();
        assert_eq!(plain.verify(&key).map(|_| ()), Err(AuthError::Malformed));
    }

    #[test]
    fn hs256_claims_are_checked() {
        let auth = Authenticator::load(&settings()).unwrap();
        assert_eq!(
            auth.verify(&token(good_claims(), SECRET))
                .map(|v| v.subject),
            Ok(Some("u1".to_string()))
        );
        let mut c = good_claims();
        c["exp"] = (now() - 60).into();
        assert_eq!(auth.verify(&token(c, SECRET)), Err(AuthError::Expired));
        // Within the leeway, a just-expired token still passes.
        let mut c = good_claims();
        c["exp"] = (now() - 2).into();
        assert!(auth.verify(&token(c, SECRET)).is_ok());
        let mut c = good_claims();
        c["nbf"] = (now() + 60).into();
        assert_eq!(auth.verify(&token(c, SECRET)), Err(AuthError::NotYetValid));
        let mut c = good_claims();
        c["aud"] = "other".into();
        assert_eq!(
            auth.verify(&token(c, SECRET)),
            Err(AuthError::WrongAudience)
        );
        let mut c = good_claims();
        c["iss"] = "https://evil.example".into();
        assert_eq!(auth.verify(&token(c, SECRET)), Err(AuthError::WrongIssuer));
        // Configured, `aud` and `iss` are required, and must be strings (a list for `aud`).
        for (claim, value, want) in [
            ("aud", None, AuthError::WrongAudience),
            (
                "aud",
                Some(serde_json::json!(123)),
                AuthError::WrongAudience,
            ),
            (
                "aud",
                Some(serde_json::Value::Null),
                AuthError::WrongAudience,
            ),
            (
                "aud",
                Some(serde_json::json!([7, "other"])),
                AuthError::WrongAudience,
            ),
            ("iss", None, AuthError::WrongIssuer),
            ("iss", Some(serde_json::json!(7)), AuthError::WrongIssuer),
            ("iss", Some(serde_json::Value::Null), AuthError::WrongIssuer),
            (
                "iss",
                Some(serde_json::json!(["https://issuer.example"])),
                AuthError::WrongIssuer,
            ),
        ] {
            let mut c = good_claims();
            match value {
                Some(v) => c[claim] = v,
                None => {
                    c.as_object_mut().unwrap().remove(claim);
                }
            }
            assert_eq!(auth.verify(&token(c.clone(), SECRET)), Err(want), "{c}");
        }
        let mut c = good_claims();
        c["aud"] = serde_json::json!(["other", "speech"]);
        assert!(auth.verify(&token(c, SECRET)).is_ok(), "a list naming us");
        // Not configured: neither is required.
        let open = Authenticator::load(&AuthSettings {
            audience: vec![],
            issuer: vec![],
            ..settings()
        })
        .unwrap();
        let mut c = good_claims();
        c.as_object_mut().unwrap().remove("aud");
        c.as_object_mut().unwrap().remove("iss");
        c.as_object_mut().unwrap().remove("sub");
        assert_eq!(open.verify(&token(c, SECRET)).map(|v| v.subject), Ok(None));
        let mut c = good_claims();
        c.as_object_mut().unwrap().remove("exp");
        assert_eq!(auth.verify(&token(c, SECRET)), Err(AuthError::MissingClaim));
        assert_eq!(
            auth.verify(&token(good_claims(), "another-secret-another-secret-xx")),
            Err(AuthError::BadSignature)
        );
        assert_eq!(auth.verify("not.a.jwt"), Err(AuthError::Malformed));
        assert_eq!(auth.verify(""), Err(AuthError::Malformed));
    }

    #[test]
    fn unsigned_and_unconfigured_algorithms_are_refused() {
        let auth = Authenticator::load(&settings()).unwrap();
        // alg=none, no signature: base64url of {"alg":"none","typ":"JWT"} and of
        // {"exp":4102444800,"aud":"speech","iss":"https://issuer.test"}.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJleHAiOjQxMDI0NDQ4MDAsImF1ZCI6InNwZWVjaCIsImlzcyI6Imh0dHBzOi8vaXNzdWVyLnRlc3QifQ.";
        assert!(auth.verify(none).is_err());
        // HS384 is a valid JWT algorithm the gateway does not accept.
        let hs384 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS384),
            &good_claims(),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert_eq!(auth.verify(&hs384), Err(AuthError::AlgorithmNotAllowed));
    }

    #[test]
    fn bearer_header_wins_over_the_query() {
        assert_eq!(token_from(Some("Bearer abc"), Some("q"), true), Some("abc"));
        assert_eq!(token_from(Some("bearer  abc "), None, true), Some("abc"));
        assert_eq!(token_from(Some("Basic abc"), Some("q"), true), None);
        assert_eq!(token_from(None, Some("q"), true), Some("q"));
        assert_eq!(token_from(None, Some("q"), false), None);
        assert_eq!(token_from(None, Some(""), true), None);
    }
}

/// What [`mint`] puts in a token.
#[derive(Debug, Clone, Default)]
pub struct MintOptions {
    pub subject: Option<String>,
    pub audience: Option<String>,
    pub issuer: Option<String>,
    pub kid: Option<String>,
    /// Lifetime from now (`exp`); `nbf` is now.
    pub ttl: std::time::Duration,
}

/// Signs a token for development and tests (`sgw token`): HS256 with a secret
/// file, RS256 or ES256 with a PEM private key (the kind is read from the file).
pub fn mint(key_file: &Path, opts: &MintOptions) -> Result<String, FileError> {
    use jsonwebtoken::{EncodingKey, Header};
    let raw = files::read(key_file)?;
    let bad = |problem: String| FileError {
        file: key_file.to_path_buf(),
        problem,
    };
    let (alg, key) = if raw.windows(11).any(|w| w == b"PRIVATE KEY") {
        if let Ok(k) = EncodingKey::from_rsa_pem(&raw) {
            (Algorithm::RS256, k)
        } else if let Ok(k) = EncodingKey::from_ec_pem(&raw) {
            (Algorithm::ES256, k)
        } else {
            return Err(bad("not an RSA or P-256 private key in PEM".into()));
        }
    } else {
        let secret = trim_newline(&raw);
        if secret.len() < MIN_HS256_SECRET {
            return Err(bad(format!(
                "an HS256 secret must be at least {MIN_HS256_SECRET} bytes"
            )));
        }
        (Algorithm::HS256, EncodingKey::from_secret(secret))
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut claims = serde_json::json!({
        "iat": now,
        "nbf": now,
        "exp": now + opts.ttl.as_secs(),
    });
    for (name, value) in [
        ("sub", &opts.subject),
        ("aud", &opts.audience),
        ("iss", &opts.issuer),
    ] {
        if let Some(v) = value {
            claims[name] = v.clone().into();
        }
    }
    let mut header = Header::new(alg);
    header.kid = opts.kid.clone();
    jsonwebtoken::encode(&header, &claims, &key).map_err(|e| bad(format!("cannot sign: {e}")))
}
