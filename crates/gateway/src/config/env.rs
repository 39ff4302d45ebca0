//! The `SGW_*` environment as a figment provider over an explicit list of variables (so
//! loading is tested without touching the process environment), and [`env_defaults`]: every
//! variable with its default, the listing `.env.example` is checked against.

use figment::value::{Dict, Map, Value};
use figment::{Metadata, Profile, Provider};

use super::ENV_PREFIX;
use super::raw::RawConfig;

/// A figment provider over an explicit list of variables, so loading can be tested
/// without touching the process environment. `SGW_A__B=v` becomes `a.b = v`, with `v`
/// parsed the way figment parses environment values (numbers, booleans, arrays).
pub struct EnvVars {
    vars: Vec<(String, String)>,
}

impl EnvVars {
    pub fn new(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        EnvVars {
            vars: vars
                .into_iter()
                .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k != "SGW_CONFIG")
                .collect(),
        }
    }
}

impl Provider for EnvVars {
    fn metadata(&self) -> Metadata {
        Metadata::named("SGW_* environment variables")
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut root = Dict::new();
        for (key, raw) in &self.vars {
            let path: Vec<String> = key[ENV_PREFIX.len()..]
                .split("__")
                .map(|p| p.to_ascii_lowercase())
                .collect();
            if path.iter().any(String::is_empty) {
                continue;
            }
            let value: Value = raw.parse().expect("figment value parsing is infallible");
            insert_path(&mut root, &path, value);
        }
        Ok(Profile::Default.collect(root))
    }
}

fn insert_path(dict: &mut Dict, path: &[String], value: Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry(first.clone())
                .or_insert_with(|| Value::from(Dict::new()));
            if entry.as_dict().is_none() {
                *entry = Value::from(Dict::new());
            }
            if let Value::Dict(_, inner) = entry {
                insert_path(inner, rest, value);
            }
        }
    }
}

/// Every environment variable with its default value, in the form `.env.example` lists
/// them. Routes have no default; `SGW_ROUTES__DEFAULT` is listed empty.
pub fn env_defaults() -> Vec<(String, String)> {
    let value = Value::serialize(RawConfig::default()).expect("defaults serialize");
    let mut out = Vec::new();
    flatten(&value, ENV_PREFIX.trim_end_matches('_'), &mut out);
    out.push(("SGW_ROUTES__DEFAULT".into(), String::new()));
    out.sort();
    out
}

fn flatten(value: &Value, prefix: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Dict(_, dict) => {
            for (k, v) in dict {
                let sep = if prefix == "SGW" { "_" } else { "__" };
                flatten(v, &format!("{prefix}{sep}{}", k.to_ascii_uppercase()), out);
            }
        }
        Value::String(_, s) => out.push((prefix.to_string(), s.clone())),
        Value::Num(_, n) => out.push((
            prefix.to_string(),
            n.to_u128()
                .map(|u| u.to_string())
                .or_else(|| n.to_i128().map(|i| i.to_string()))
                .or_else(|| n.to_f64().map(|f| f.to_string()))
                .unwrap_or_default(),
        )),
        Value::Bool(_, b) => out.push((prefix.to_string(), b.to_string())),
        Value::Array(_, a) if a.is_empty() => out.push((prefix.to_string(), String::new())),
        // an optional setting left unset (`page.enabled`): listed empty
        Value::Empty(..) => out.push((prefix.to_string(), String::new())),
        other => out.push((prefix.to_string(), format!("{other:?}"))),
    }
}
