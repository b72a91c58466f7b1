//! Clients and their tokens. Clients are configured in the `CLIENTS_JSON` secret with the
//! SHA-256 of their token (never the token itself), scopes, and optional per-client limits.
//! Tokens are hashed on arrival and compared with every client's digest in constant time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Generate,
    Conversations,
    Stats,
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Generate => "generate",
            Scope::Conversations => "conversations",
            Scope::Stats => "stats",
            Scope::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Scope> {
        Some(match s {
            "generate" => Scope::Generate,
            "conversations" => Scope::Conversations,
            "stats" => Scope::Stats,
            "admin" => Scope::Admin,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Client {
    pub id: String,
    digest: [u8; 32],
    pub scopes: Vec<Scope>,
    pub rpm: Option<u32>,
    pub burst: Option<u32>,
    /// Tokens (input + output + thinking) the client may use per Pacific day.
    pub daily_tokens: Option<u64>,
    /// Tokens the client may use in any rolling minute (the quota window).
    pub tpm: Option<u64>,
    /// The models the client may use; `None`: every model of the pool.
    pub models: Option<Vec<String>>,
}

impl Client {
    /// Whether the client may use `model` (no `models` list: any).
    pub fn allows_model(&self, model: &str) -> bool {
        self.models.as_ref().is_none_or(|m| m.iter().any(|x| x == model))
    }

    /// `admin` implies every other scope.
    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Clients {
    pub clients: Vec<Client>,
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// Compares two digests in constant time, so timing does not reveal a matching prefix.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.ct_eq(b).into()
}

impl Clients {
    pub fn parse(json: &str) -> Result<Clients, Vec<String>> {
        let raw = super::raw::raw_clients(json).map_err(|e| vec![format!("CLIENTS_JSON: {e}")])?;
        let mut errors = Vec::new();
        let mut clients = Vec::new();
        for (i, c) in raw.into_iter().enumerate() {
            let at = format!("CLIENTS_JSON.clients[{i}]");
            if !crate::ids::valid_name(&c.id) {
                errors.push(format!("{at}.id: must be 1-64 characters of A-Z a-z 0-9 - _ ."));
            }
            if clients.iter().any(|o: &Client| o.id == c.id) {
                errors.push(format!("{at}.id: duplicate id '{}'", c.id));
            }
            let digest = hex32(&c.token_sha256.to_ascii_lowercase()).unwrap_or_else(|| {
                errors.push(format!("{at}.token_sha256: must be 64 hex characters (the SHA-256 of the token)"));
                [0; 32]
            });
            let mut scopes = Vec::new();
            for s in &c.scopes {
                match Scope::parse(s) {
                    Some(sc) => scopes.push(sc),
                    None => errors
                        .push(format!("{at}.scopes: unknown scope '{s}' (use generate, conversations, stats, admin)")),
                }
            }
            let mut lim = |name: &str, v: Option<i64>| match v {
                None => None,
                Some(n) if n > 0 && n <= 1_000_000_000 => Some(n as u32),
                Some(n) => {
                    errors.push(format!("{at}.{name}: must be from 1 to 1000000000, got {n}"));
                    None
                }
            };
            let (rpm, burst) = (lim("rpm", c.rpm), lim("burst", c.burst));
            let (daily_tokens, tpm) =
                (lim("daily_tokens", c.daily_tokens).map(u64::from), lim("tpm", c.tpm).map(u64::from));
            if let Some(ms) = &c.models {
                if ms.is_empty() {
                    errors.push(format!("{at}.models: must name at least one model (omit it to allow all)"));
                }
                for m in ms.iter().filter(|m| !crate::ids::valid_name(m)) {
                    errors.push(format!("{at}.models: '{m}' is not a model name"));
                }
            }
            clients.push(Client { id: c.id, digest, scopes, rpm, burst, daily_tokens, tpm, models: c.models });
        }
        if errors.is_empty() {
            Ok(Clients { clients })
        } else {
            Err(errors)
        }
    }

    /// The client whose token this is. Every digest is compared, match or not.
    pub fn authenticate(&self, token: &str) -> Option<&Client> {
        let d = sha256(token.as_bytes());
        let mut found = None;
        for c in &self.clients {
            if ct_eq(&c.digest, &d) && found.is_none() {
                found = Some(c);
            }
        }
        found
    }
}

/// The caller's token: `Authorization: Bearer …`, or `x-goog-api-key` (what the google-genai
/// SDK sends) on any route.
pub fn extract_token<'a>(authorization: Option<&'a str>, goog_api_key: Option<&'a str>) -> Option<&'a str> {
    if let Some(a) = authorization {
        let a = a.trim();
        // Compared as bytes: a header value may hold non-ASCII (obs-text), and slicing the str
        // at byte 7 inside a multi-byte character would panic.
        if a.len() > 7 && a.as_bytes()[..7].eq_ignore_ascii_case(b"bearer ") {
            let t = a[7..].trim();
            if !t.is_empty() {
                return Some(t);
            }
        }
    }
    goog_api_key.map(str::trim).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_parse_from_hex_of_either_case_and_compare_exactly() {
        let d = sha256(b"tok");
        assert_eq!(hex32(&hex::encode(d)), Some(d));
        assert_eq!(hex32(&hex::encode_upper(d)), Some(d));
        assert_eq!(hex32("abc"), None);
        assert!(ct_eq(&d, &d));
        let mut e = d;
        e[31] ^= 1;
        assert!(!ct_eq(&d, &e));
    }

    fn hex(d: [u8; 32]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn authenticates_by_digest_and_checks_scopes() {
        let json = format!(
            r#"{{"clients":[{{"id":"a","token_sha256":"{}","scopes":["generate"]}},
                              {{"id":"ops","token_sha256":"{}","scopes":["admin"],"rpm":5,"burst":7}}]}}"#,
            hex(sha256(b"tok-a")),
            hex(sha256(b"tok-ops"))
        );
        let c = Clients::parse(&json).unwrap();
        let a = c.authenticate("tok-a").unwrap();
        assert_eq!(a.id, "a");
        assert!(a.has(Scope::Generate) && !a.has(Scope::Stats));
        let ops = c.authenticate("tok-ops").unwrap();
        assert!(ops.has(Scope::Stats) && ops.has(Scope::Conversations));
        assert_eq!((ops.rpm, ops.burst), (Some(5), Some(7)));
        assert!(c.authenticate("tok-b").is_none());
        assert!(c.authenticate("").is_none());
    }

    #[test]
    fn budgets_and_model_lists() {
        let json = format!(
            r#"{{"clients":[{{"id":"a","token_sha256":"{}","scopes":["generate"],"daily_tokens":1000,"tpm":50,
                              "models":["gemini-2.5-flash"]}}]}}"#,
            hex(sha256(b"tok-a"))
        );
        let c = Clients::parse(&json).unwrap();
        let a = c.authenticate("tok-a").unwrap();
        assert_eq!((a.daily_tokens, a.tpm), (Some(1000), Some(50)));
        assert!(a.allows_model("gemini-2.5-flash") && !a.allows_model("gemini-2.5-pro"));
        let errs = Clients::parse(&json.replace("1000", "0").replace(r#"["gemini-2.5-flash"]"#, "[]")).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].contains("daily_tokens") && errs[1].contains("models"), "{errs:?}");
    }

    #[test]
    fn bad_config_names_the_field() {
        let errs =
            Clients::parse(r#"{"clients":[{"id":"a:b","token_sha256":"xyz","scopes":["root"],"rpm":0}]}"#).unwrap_err();
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(errs.iter().all(|e| e.starts_with("CLIENTS_JSON.clients[0].")));
    }

    #[test]
    fn token_extraction() {
        assert_eq!(extract_token(Some("Bearer abc"), None), Some("abc"));
        assert_eq!(extract_token(Some("bearer  abc "), None), Some("abc"));
        assert_eq!(extract_token(Some("Basic abc"), Some("k")), Some("k"));
        assert_eq!(extract_token(None, Some("k")), Some("k"));
        assert_eq!(extract_token(Some("Bearer "), None), None);
        assert_eq!(extract_token(None, None), None);
        // Found by fuzzing: a multi-byte character across byte 7 used to panic.
        assert_eq!(extract_token(Some("abcdef\u{e9}tok"), None), None);
        assert_eq!(extract_token(Some("Bearer\u{e9}x"), Some("k")), Some("k"));
    }
}
