//! API keys: long random strings a client sends instead of a JWT (`Authorization: Token
//! KEY` as Deepgram's SDKs send it, `Authorization: Bearer KEY`, the `token, KEY`
//! WebSocket subprotocol, or `?token=` where allowed).
//!
//! The gateway never holds a key itself: `auth.api_keys_file` lists each key's SHA-256, a
//! name (the `key` label of the per-key metrics, and the log field), and optionally a cap
//! on the key's live sessions. A TOML file:
//!
//! ```toml
//! [[key]]
//! name = "ios-app"                 # 1–64 of A–Z a–z 0–9 . _ -
//! sha256 = "9f86d081884c7d65…"     # 64 hex digits: SHA-256 of the key's bytes
//! max_sessions = 50                # optional; 0 or absent: no per-key cap
//! ```
//!
//! `sgw api-key NAME` prints a new key and its entry. A plain SHA-256 suffices because
//! the keys are random (256 bits): there is nothing to guess by brute force. The file is
//! re-read when it changes and on SIGHUP, like the JWT keys; a file that fails to load
//! keeps the previous keys in force.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use figment::providers::Format;
use serde::Deserialize;

use super::files::{self, FileError};
use super::reload::{FileStamp, Reloadable};

/// Most entries a key file may hold.
pub const MAX_KEYS: usize = 10_000;

/// Who a key is: what the gateway keeps of it after a match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyIdentity {
    /// The entry's name (a metric label and log field; never the key).
    pub name: Arc<str>,
    /// Live sessions this key may hold (0: no per-key cap).
    pub max_sessions: usize,
}

/// The keys of `auth.api_keys_file`, by SHA-256.
pub struct ApiKeys {
    file: PathBuf,
    keys: RwLock<Arc<HashMap<[u8; 32], Arc<KeyIdentity>>>>,
    stamp: FileStamp,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKeys")
            .field("file", &self.file)
            .field("keys", &self.len())
            .finish_non_exhaustive()
    }
}

impl ApiKeys {
    /// Loads the file; an unusable file stops start-up with its name and the problem.
    pub fn load(file: &Path) -> Result<ApiKeys, FileError> {
        let keys = read_keys(file)?;
        Ok(ApiKeys {
            file: file.to_path_buf(),
            keys: RwLock::new(Arc::new(keys)),
            stamp: FileStamp::new(&[file]),
        })
    }

    /// How many keys are loaded.
    pub fn len(&self) -> usize {
        self.keys.read().expect("api keys lock").len()
    }

    /// Whether no key is loaded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The identity of `key`, if the file lists its hash.
    pub fn lookup(&self, key: &str) -> Option<Arc<KeyIdentity>> {
        let digest = sha256(key.as_bytes());
        self.keys
            .read()
            .expect("api keys lock")
            .get(&digest)
            .cloned()
    }
}

impl Reloadable for ApiKeys {
    fn what(&self) -> &'static str {
        "api_keys"
    }

    fn changed(&self) -> bool {
        self.stamp.changed()
    }

    fn reload(&self) -> Result<(), FileError> {
        self.stamp.refresh();
        let keys = read_keys(&self.file)?;
        *self.keys.write().expect("api keys lock") = Arc::new(keys);
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    #[serde(default)]
    key: Vec<KeyEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    name: String,
    sha256: String,
    #[serde(default)]
    max_sessions: usize,
}

fn read_keys(file: &Path) -> Result<HashMap<[u8; 32], Arc<KeyIdentity>>, FileError> {
    let bad = |problem: String| FileError {
        file: file.to_path_buf(),
        problem,
    };
    let raw = files::read(file)?;
    let text = std::str::from_utf8(&raw).map_err(|_| bad("not UTF-8 text".into()))?;
    let parsed: KeyFile = figment::Figment::from(figment::providers::Toml::string(text))
        .extract()
        .map_err(|e| bad(format!("not an API key file: {e}")))?;
    if parsed.key.len() > MAX_KEYS {
        return Err(bad(format!("holds more than {MAX_KEYS} keys")));
    }
    let mut keys = HashMap::with_capacity(parsed.key.len());
    let mut names = std::collections::HashSet::new();
    for (i, entry) in parsed.key.into_iter().enumerate() {
        let n = i + 1;
        if !valid_name(&entry.name) {
            return Err(bad(format!(
                "key {n}: name must be 1–64 of A–Z a–z 0–9 . _ -"
            )));
        }
        if !names.insert(entry.name.clone()) {
            return Err(bad(format!(
                "key {n}: the name `{}` is used twice",
                entry.name
            )));
        }
        let digest = parse_hex32(&entry.sha256).ok_or_else(|| {
            bad(format!(
                "key {n} (`{}`): sha256 must be 64 hex digits",
                entry.name
            ))
        })?;
        let identity = Arc::new(KeyIdentity {
            name: entry.name.as_str().into(),
            max_sessions: entry.max_sessions,
        });
        if keys.insert(digest, identity).is_some() {
            return Err(bad(format!(
                "key {n} (`{}`): the same key is listed twice",
                entry.name
            )));
        }
    }
    Ok(keys)
}

/// Whether `name` may name a key (it becomes a metric label).
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The `sha256` of a key as the file spells it.
pub fn sha256_hex(key: &str) -> String {
    sha256_hex_bytes(key.as_bytes())
}

/// SHA-256 of any bytes, in hex (also the `sha256` of a prerecorded response).
pub fn sha256_hex_bytes(bytes: &[u8]) -> String {
    hex(&sha256(bytes))
}

/// A new key: `sgw_` and 64 hex digits (256 random bits from the system's generator).
pub fn generate() -> Result<String, FileError> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| FileError {
        file: PathBuf::from("(random)"),
        problem: "the system's random generator failed".into(),
    })?;
    Ok(format!("sgw_{}", hex(&bytes)))
}

/// The file entry for `key` under `name`.
pub fn entry(name: &str, key: &str, max_sessions: usize) -> String {
    let mut s = format!(
        "[[key]]\nname = \"{name}\"\nsha256 = \"{}\"\n",
        sha256_hex(key)
    );
    if max_sessions > 0 {
        s.push_str(&format!("max_sessions = {max_sessions}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn sha256_is_the_standard_one() {
        // FIPS 180-2 test vector.
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_listed_key_is_found_and_others_are_not() {
        let key = generate().unwrap();
        assert!(key.starts_with("sgw_") && key.len() == 68);
        let other = generate().unwrap();
        assert_ne!(key, other);
        let f = file(&(entry("ios-app", &key, 3) + &entry("bots", &other, 0)));
        let keys = ApiKeys::load(f.path()).unwrap();
        assert_eq!(keys.len(), 2);
        let found = keys.lookup(&key).unwrap();
        assert_eq!(&*found.name, "ios-app");
        assert_eq!(found.max_sessions, 3);
        assert_eq!(keys.lookup(&other).unwrap().max_sessions, 0);
        assert!(keys.lookup("sgw_not_a_key").is_none());
        assert!(keys.lookup(&key[..key.len() - 1]).is_none());
    }

    #[test]
    fn bad_files_are_refused_with_the_entry_and_the_problem() {
        let key = generate().unwrap();
        let cases = [
            ("[[key]]\nname = \"a b\"\nsha256 = \"00\"\n", "name must be"),
            ("[[key]]\nname = \"a\"\nsha256 = \"xyz\"\n", "64 hex digits"),
            ("[[key]]\nname = \"a\"\n", "not an API key file"),
            (
                "[[key]]\nname = \"a\"\nsha256 = \"00\"\nextra = 1\n",
                "not an API key file",
            ),
            ("not toml at all [", "not an API key file"),
        ];
        for (text, want) in cases {
            let err = ApiKeys::load(file(text).path()).unwrap_err();
            assert!(err.problem.contains(want), "{text:?}: {err}");
        }
        let twice = entry("a", &key, 0) + &entry("a", &generate().unwrap(), 0);
        let err = ApiKeys::load(file(&twice).path()).unwrap_err();
        assert!(err.problem.contains("used twice"), "{err}");
        let same = entry("a", &key, 0) + &entry("b", &key, 0);
        let err = ApiKeys::load(file(&same).path()).unwrap_err();
        assert!(err.problem.contains("listed twice"), "{err}");
        // The problem never quotes the key or its hash.
        assert!(!err.to_string().contains(&sha256_hex(&key)));
    }

    #[test]
    fn an_empty_file_holds_no_keys() {
        let keys = ApiKeys::load(file("").path()).unwrap();
        assert!(keys.is_empty());
    }

    #[test]
    fn a_reload_takes_the_new_file_and_a_bad_one_keeps_the_old() {
        let (a, b) = (generate().unwrap(), generate().unwrap());
        let f = file(&entry("a", &a, 0));
        let keys = ApiKeys::load(f.path()).unwrap();
        std::fs::write(f.path(), entry("b", &b, 0)).unwrap();
        keys.reload().unwrap();
        assert!(keys.lookup(&a).is_none());
        assert!(keys.lookup(&b).is_some());
        std::fs::write(f.path(), "[[key]]\nname = 5\n").unwrap();
        assert!(keys.reload().is_err());
        assert!(keys.lookup(&b).is_some());
    }
}
