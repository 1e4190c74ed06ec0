//! Sessions: HS256 access tokens (JWT) and CSRF tokens bound to the user.
//!
//! Access tokens carry `sub`, `iat`, `nbf`, `exp`, `iss`, `aud`, `jti`, the account's session
//! generation `gen` (0 when absent, so older tokens still parse; see [`crate::revocation`]) and a
//! `kid` header naming the key; only HS256 is accepted, and a previous key still verifies (never signs) during a
//! rotation. CSRF tokens are `v1.<expiry>.<nonce>.<mac>` with an HMAC-SHA256 over the user id,
//! expiry and nonce, compared in constant time.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use http::{HeaderMap, header};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clock::Clock;
use crate::config::{Config, ConfigError, Need, Secret};
use crate::cors::Cors;
use crate::error::{ApiError, ForbiddenKind};
use crate::secrets::{Secrets, Snapshot};

type HmacSha256 = Hmac<Sha256>;

/// The reason given when a token's `kid` names no known key.
const UNKNOWN_KEY: &str = "unknown key";

/// Seconds of clock skew tolerated on `nbf` and `exp`.
/// How long a device token ([`Sessions::issue_device`]) counts: 30 days.
pub const DEVICE_TTL_S: u64 = 30 * 24 * 3600;

const LEEWAY_SECS: u64 = 5;

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Issued at (epoch seconds).
    pub iat: u64,
    /// Not before (epoch seconds).
    pub nbf: u64,
    /// Expires at (epoch seconds).
    pub exp: u64,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Unique token id.
    pub jti: String,
    /// The account's session generation when the token was issued (private claim `gen`;
    /// 0 when absent). The session ends once the account's generation moves past it.
    #[serde(rename = "gen", default)]
    pub generation: u64,
}

struct Key {
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl Key {
    fn new(secret: &Secret) -> Self {
        let digest = Sha256::digest([b"kid:".as_slice(), secret.expose().as_bytes()].concat());
        Self {
            kid: hex::encode(&digest[..6]),
            encoding: EncodingKey::from_secret(secret.expose().as_bytes()),
            decoding: DecodingKey::from_secret(secret.expose().as_bytes()),
        }
    }
}

/// A token issued to a client, with its lifetime in seconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The token.
    pub token: String,
    /// Seconds until it expires.
    pub expires_in: u64,
}

/// Issues and verifies access and CSRF tokens.
///
/// Keys come from [`Secrets`]: tokens are signed with the current JWT and CSRF keys and
/// verified with the current and the previous ones, re-derived whenever the secrets change.
#[derive(Clone)]
pub struct Sessions {
    inner: Arc<Inner>,
}

struct KeySet {
    generation: u64,
    current: Key,
    previous: Option<Key>,
    csrf: Secret,
    csrf_previous: Option<Secret>,
}

struct Inner {
    secrets: Secrets,
    keys: RwLock<Arc<KeySet>>,
    environment: crate::config::Environment,
    jwt_ttl: Duration,
    csrf_ttl: Duration,
    issuer: String,
    audience: String,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("kid", &self.keys().current.kid)
            .finish_non_exhaustive()
    }
}

fn key_set(
    snapshot: &Snapshot,
    environment: crate::config::Environment,
) -> Result<KeySet, ConfigError> {
    let missing = |need: Need| ConfigError::Missing {
        var: need.id_var().into(),
        environment,
    };
    let jwt = snapshot
        .get(Need::JwtKey)
        .ok_or_else(|| missing(Need::JwtKey))?;
    let csrf = snapshot
        .get(Need::CsrfKey)
        .ok_or_else(|| missing(Need::CsrfKey))?;
    Ok(KeySet {
        generation: snapshot.generation(),
        current: Key::new(&jwt.current),
        previous: jwt.previous.as_ref().map(Key::new),
        csrf: csrf.current.clone(),
        csrf_previous: csrf.previous.clone(),
    })
}

impl Sessions {
    /// Sessions with the keys `config` holds itself (development values), its lifetimes,
    /// issuer and audience; fails, naming the variable, when a key is missing. Deployed
    /// functions use [`Sessions::with_secrets`].
    pub fn new(config: &Config, clock: Arc<dyn Clock>) -> Result<Self, ConfigError> {
        config.require(&[Need::JwtKey, Need::CsrfKey])?;
        Self::with_secrets(config, Secrets::from_config(config), clock)
    }

    /// Sessions whose keys come from `secrets` (which must hold the JWT and CSRF keys).
    pub fn with_secrets(
        config: &Config,
        secrets: Secrets,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ConfigError> {
        let keys = key_set(&secrets.snapshot(), config.environment)?;
        Ok(Self {
            inner: Arc::new(Inner {
                secrets,
                keys: RwLock::new(Arc::new(keys)),
                environment: config.environment,
                jwt_ttl: config.jwt_ttl,
                csrf_ttl: config.csrf_ttl,
                issuer: config.jwt_issuer.clone(),
                audience: config.jwt_audience.clone(),
                clock,
            }),
        })
    }

    /// The keys of the secrets' current snapshot, derived again only when it changed.
    fn keys(&self) -> Arc<KeySet> {
        let i = &self.inner;
        let snapshot = i.secrets.snapshot();
        let cached = match i.keys.read() {
            Ok(k) => Arc::clone(&k),
            Err(p) => Arc::clone(&p.into_inner()),
        };
        if cached.generation == snapshot.generation() {
            return cached;
        }
        match key_set(&snapshot, i.environment) {
            Ok(keys) => {
                let keys = Arc::new(keys);
                if let Ok(mut slot) = i.keys.write() {
                    *slot = Arc::clone(&keys);
                }
                keys
            }
            Err(_) => cached,
        }
    }

    /// [`Sessions::authenticate`], and when the token names a key this instance does not
    /// know (another instance may already sign with a rotated key), one early refresh of the
    /// secrets and a second try.
    pub async fn authenticate_fresh(&self, headers: &HeaderMap) -> Result<Claims, ApiError> {
        match self.authenticate_claims(headers) {
            Err(ApiError::Unauthorized(UNKNOWN_KEY)) if self.inner.secrets.refresh_now().await => {
                self.authenticate_claims(headers)
            }
            other => other,
        }
    }

    /// [`Sessions::check_csrf`], with one early refresh of the secrets and a second try when
    /// the token's MAC matches neither known key.
    pub async fn check_csrf_fresh(
        &self,
        headers: &HeaderMap,
        session: &Claims,
        cors: &Cors,
    ) -> Result<(), ApiError> {
        match self.check_csrf(headers, session, cors) {
            Err(ApiError::Forbidden(ForbiddenKind::CsrfToken))
                if headers.contains_key("x-csrf-token")
                    && self.inner.secrets.refresh_now().await =>
            {
                self.check_csrf(headers, session, cors)
            }
            other => other,
        }
    }

    /// Signs an access token for `user_id` at the account's session generation `generation`
    /// with the current key.
    pub fn issue_access_token(&self, user_id: &str, generation: u64) -> Result<Issued, ApiError> {
        self.issue_session(user_id, generation)
            .map(|(issued, _)| issued)
    }

    /// Signs an access token for `user_id` at the account's session generation `generation`
    /// (login reads it from the account's `UserRecord::session_gen`) and returns it with its claims, which a CSRF token for the same session is
    /// bound to ([`Sessions::issue_csrf`]).
    pub fn issue_session(
        &self,
        user_id: &str,
        generation: u64,
    ) -> Result<(Issued, Claims), ApiError> {
        let i = &self.inner;
        let keys = self.keys();
        let now = i.clock.now_s();
        let claims = Claims {
            sub: user_id.to_string(),
            iat: now,
            nbf: now,
            exp: now + i.jwt_ttl.as_secs(),
            iss: i.issuer.clone(),
            aud: i.audience.clone(),
            jti: uuid::Uuid::new_v4().to_string(),
            generation,
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(keys.current.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &keys.current.encoding)
            .map_err(|_| ApiError::Internal("signing an access token failed".into()))?;
        Ok((
            Issued {
                token,
                expires_in: i.jwt_ttl.as_secs(),
            },
            claims,
        ))
    }

    /// Verifies an access token and returns its claims.
    pub fn verify_access_token(&self, token: &str) -> Result<Claims, ApiError> {
        let i = &self.inner;
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| ApiError::Unauthorized("malformed token"))?;
        if header.alg != Algorithm::HS256 {
            return Err(ApiError::Unauthorized("unexpected algorithm"));
        }
        if header.crit.is_some() {
            return Err(ApiError::Unauthorized(
                "critical header extensions are not supported",
            ));
        }
        let keys = self.keys();
        let key = match header.kid.as_deref() {
            Some(kid) if kid == keys.current.kid => &keys.current,
            Some(kid) if keys.previous.as_ref().is_some_and(|p| p.kid == kid) => keys
                .previous
                .as_ref()
                .ok_or(ApiError::Unauthorized(UNKNOWN_KEY))?,
            _ => return Err(ApiError::Unauthorized(UNKNOWN_KEY)),
        };
        let mut v = Validation::new(Algorithm::HS256);
        v.set_issuer(&[&i.issuer]);
        v.set_audience(&[&i.audience]);
        v.set_required_spec_claims(&["sub", "iat", "nbf", "exp", "iss", "aud"]);
        // Time claims are checked below against the injected clock, not the system time.
        v.validate_nbf = false;
        v.validate_exp = false;
        v.leeway = LEEWAY_SECS;
        let data = jsonwebtoken::decode::<Claims>(token, &key.decoding, &v)
            .map_err(|_| ApiError::Unauthorized("invalid token"))?;
        let c = data.claims;
        let now = i.clock.now_s();
        if c.exp.saturating_add(LEEWAY_SECS) <= now {
            return Err(ApiError::Unauthorized("expired token"));
        }
        if c.nbf > now.saturating_add(LEEWAY_SECS) || c.sub.is_empty() || c.jti.is_empty() {
            return Err(ApiError::Unauthorized("token not valid yet"));
        }
        if c.iat > now.saturating_add(LEEWAY_SECS)
            || c.iat > c.exp
            || c.exp - c.iat > i.jwt_ttl.as_secs()
        {
            return Err(ApiError::Unauthorized("token lifetime outside the policy"));
        }
        Ok(c)
    }

    /// Reads the bearer token from `Authorization` and returns the user id.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<String, ApiError> {
        self.authenticate_claims(headers).map(|c| c.sub)
    }

    /// Reads the bearer token from `Authorization` and returns its verified claims.
    pub fn authenticate_claims(&self, headers: &HeaderMap) -> Result<Claims, ApiError> {
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or(ApiError::Unauthorized("missing bearer token"))?
            .to_str()
            .map_err(|_| ApiError::Unauthorized("malformed authorization header"))?;
        let (scheme, token) = value
            .split_once(' ')
            .ok_or(ApiError::Unauthorized("malformed authorization header"))?;
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(ApiError::Unauthorized("not a bearer token"));
        }
        self.verify_access_token(token.trim())
    }

    fn csrf_mac(key: &Secret, session: &Claims, expires: u64, nonce: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(key.expose().as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(b"csrf|v2|");
        mac.update(session.sub.as_bytes());
        mac.update(b"|");
        mac.update(session.jti.as_bytes());
        mac.update(b"|");
        mac.update(expires.to_string().as_bytes());
        mac.update(b"|");
        mac.update(nonce.as_bytes());
        mac
    }

    /// Issues a CSRF token for the session whose access token has the claims `session`.
    ///
    /// The token is bound to the session (the access token's user and `jti`) and expires after
    /// the CSRF lifetime or with the access token, whichever comes first.
    pub fn issue_csrf(&self, session: &Claims) -> Issued {
        let now = self.inner.clock.now_s();
        let expires = (now + self.inner.csrf_ttl.as_secs()).min(session.exp);
        let nonce = B64.encode(uuid::Uuid::new_v4().as_bytes());
        let tag = B64.encode(
            Self::csrf_mac(&self.keys().csrf, session, expires, &nonce)
                .finalize()
                .into_bytes(),
        );
        Issued {
            token: format!("v2.{expires}.{nonce}.{tag}"),
            expires_in: expires.saturating_sub(now),
        }
    }

    fn device_mac(
        key: &Secret,
        email: &str,
        generation: u64,
        expires: u64,
        nonce: &str,
    ) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(key.expose().as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(b"device|v2|");
        mac.update(email.as_bytes());
        mac.update(b"|");
        mac.update(generation.to_string().as_bytes());
        mac.update(b"|");
        mac.update(expires.to_string().as_bytes());
        mac.update(b"|");
        mac.update(nonce.as_bytes());
        mac
    }

    /// Issues a device token for the account of `email` (normalised) at its session generation
    /// `generation`: proof that this client has logged in to this account before, valid for
    /// [`DEVICE_TTL_S`] or until the account's sessions end (a reset, a password change or
    /// logout everywhere bumps the generation, which ends every device token with them). It is not a
    /// credential (a login still needs the password); it only moves the client's failed
    /// logins from the account's counter, which strangers can fill, to a counter of its own,
    /// so nobody can lock an account's owner out of the devices they use (OWASP's device
    /// cookies). MAC'd with the CSRF key, so a key rotation (and its grace period) ends it.
    pub fn issue_device(&self, email: &str, generation: u64) -> Issued {
        let now = self.inner.clock.now_s();
        let expires = now + DEVICE_TTL_S;
        let nonce = B64.encode(uuid::Uuid::new_v4().as_bytes());
        let tag = B64.encode(
            Self::device_mac(&self.keys().csrf, email, generation, expires, &nonce)
                .finalize()
                .into_bytes(),
        );
        Issued {
            token: format!("d2.{expires}.{nonce}.{tag}"),
            expires_in: DEVICE_TTL_S,
        }
    }

    /// The device id (the token's nonce) of a valid, unexpired device token issued for
    /// `email` at the account's current session generation `generation`; `None` for anything
    /// else (another account's token, one from before the sessions ended, a forgery, an
    /// expired one).
    pub fn verify_device(&self, token: &str, email: &str, generation: u64) -> Option<String> {
        let mut parts = token.split('.');
        let (Some("d2"), Some(expires), Some(nonce), Some(tag), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return None;
        };
        if expires.is_empty()
            || !expires.bytes().all(|b| b.is_ascii_digit())
            || (expires.len() > 1 && expires.starts_with('0'))
        {
            return None;
        }
        let expires: u64 = expires.parse().ok()?;
        let now = self.inner.clock.now_s();
        if expires <= now || expires > now + DEVICE_TTL_S + LEEWAY_SECS {
            return None;
        }
        let tag = B64.decode(tag).ok()?;
        let keys = self.keys();
        let verifies = |key: &Secret| {
            Self::device_mac(key, email, generation, expires, nonce)
                .verify_slice(&tag)
                .is_ok()
        };
        (verifies(&keys.csrf) || keys.csrf_previous.as_ref().is_some_and(verifies))
            .then(|| nonce.to_string())
    }

    /// Verifies a CSRF token for the session of `session`'s access token.
    pub fn verify_csrf(&self, token: &str, session: &Claims) -> Result<(), ApiError> {
        let bad = ApiError::Forbidden(ForbiddenKind::CsrfToken);
        let mut parts = token.split('.');
        let (Some("v2"), Some(expires), Some(nonce), Some(tag), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(bad);
        };
        // Only the canonical decimal the server wrote: no sign, no leading zeros.
        if expires.is_empty()
            || !expires.bytes().all(|b| b.is_ascii_digit())
            || (expires.len() > 1 && expires.starts_with('0'))
        {
            return Err(bad);
        }
        let expires: u64 = expires
            .parse()
            .map_err(|_| ApiError::Forbidden(ForbiddenKind::CsrfToken))?;
        let now = self.inner.clock.now_s();
        if expires <= now
            || expires > now + self.inner.csrf_ttl.as_secs() + LEEWAY_SECS
            || expires > session.exp
        {
            return Err(bad);
        }
        let tag = B64
            .decode(tag)
            .map_err(|_| ApiError::Forbidden(ForbiddenKind::CsrfToken))?;
        let keys = self.keys();
        let verifies = |key: &Secret| {
            Self::csrf_mac(key, session, expires, nonce)
                .verify_slice(&tag)
                .is_ok()
        };
        if verifies(&keys.csrf) || keys.csrf_previous.as_ref().is_some_and(verifies) {
            Ok(())
        } else {
            Err(bad)
        }
    }

    /// The CSRF defence of a state-changing request: the origin check, then the token.
    ///
    /// An `Origin` on the allow-list passes the origin check; any other `Origin`, or
    /// `Sec-Fetch-Site: cross-site` or `same-site`, is refused; a request with neither header
    /// (a non-browser client) goes on to the token check, which every request must pass.
    pub fn check_csrf(
        &self,
        headers: &HeaderMap,
        session: &Claims,
        cors: &Cors,
    ) -> Result<(), ApiError> {
        let origin = headers
            .get(header::ORIGIN)
            .map(|v| v.to_str().unwrap_or("invalid"));
        let fetch_site = headers
            .get("sec-fetch-site")
            .map(|v| v.to_str().unwrap_or("invalid").to_ascii_lowercase());
        match origin {
            Some(o) if cors.allows(o) => {}
            Some(_) => return Err(ApiError::Forbidden(ForbiddenKind::CrossOrigin)),
            None if matches!(fetch_site.as_deref(), Some("cross-site" | "same-site")) => {
                return Err(ApiError::Forbidden(ForbiddenKind::CrossOrigin));
            }
            None => {}
        }
        let token = headers
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Forbidden(ForbiddenKind::CsrfToken))?;
        self.verify_csrf(token.trim(), session)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use http::{HeaderValue, Method};

    const T0: u64 = 1_700_000_000_000;

    fn config(jwt: &str, previous: Option<&str>) -> Config {
        let jwt = jwt.to_string();
        let previous = previous.map(str::to_string);
        Config::from_lookup(move |k| match k {
            "JWT_SECRET_KEY" => Some(jwt.clone()),
            "JWT_SECRET_KEY_PREVIOUS" => previous.clone(),
            "CSRF_SECRET_KEY" => Some("csrf-key-for-tests-0123456789abcdef".into()),
            "ENVIRONMENT" => Some("development".into()),
            _ => None,
        })
        .expect("config")
    }

    fn sessions(jwt: &str, previous: Option<&str>) -> (Sessions, ManualClock) {
        let clock = ManualClock::at_ms(T0);
        (
            Sessions::new(&config(jwt, previous), Arc::new(clock.clone())).expect("sessions"),
            clock,
        )
    }

    const KEY: &str = "jwt-key-for-tests-0123456789abcdef";

    #[test]
    fn given_a_device_token_when_verified_then_only_for_its_account_untampered_and_unexpired() {
        let (s, clock) = sessions(KEY, None);
        let device = s.issue_device("ada@example.com", 3).token;
        let id = s
            .verify_device(&device, "ada@example.com", 3)
            .expect("valid");
        assert!(device.contains(&id));
        assert_eq!(s.verify_device(&device, "bob@example.com", 3), None);
        assert_eq!(
            s.verify_device(&device, "ada@example.com", 4),
            None,
            "the account's sessions ended since"
        );
        let mut forged = device.clone();
        forged.pop();
        forged.push(if device.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(s.verify_device(&forged, "ada@example.com", 3), None);
        let longer = device.replacen("d2.", "d2.9", 1);
        assert_eq!(s.verify_device(&longer, "ada@example.com", 3), None);
        assert_eq!(s.verify_device("d2.1.a.b", "ada@example.com", 3), None);
        clock.advance_ms(DEVICE_TTL_S * 1000);
        assert_eq!(
            s.verify_device(&device, "ada@example.com", 3),
            None,
            "expired"
        );
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).expect("h"),
        );
        h
    }

    #[test]
    fn given_an_issued_token_when_authenticating_then_user_is_known() {
        let (s, _) = sessions(KEY, None);
        let t = s.issue_access_token("user-1", 0).expect("token");
        assert_eq!(s.authenticate(&bearer(&t.token)).expect("auth"), "user-1");
        let header = jsonwebtoken::decode_header(&t.token).expect("header");
        assert!(header.kid.is_some());
    }

    #[test]
    fn given_bad_tokens_when_authenticating_then_401() {
        let (s, clock) = sessions(KEY, None);
        let (other, _) = sessions("another-key-0123456789abcdef-0123456", None);
        let good = s.issue_access_token("u", 0).expect("t").token;
        let parts: Vec<&str> = good.split('.').collect();
        let none_header = B64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let alg_none = format!("{none_header}.{}.", parts[1]);
        let tampered_payload = B64.encode(
            String::from_utf8(B64.decode(parts[1]).expect("b64"))
                .expect("utf8")
                .replace("\"u\"", "\"admin\""),
        );
        let tampered = format!("{}.{}.{}", parts[0], tampered_payload, parts[2]);
        let foreign = other.issue_access_token("u", 0).expect("t").token;
        for bad in [
            alg_none.as_str(),
            tampered.as_str(),
            foreign.as_str(),
            "abc",
            "",
        ] {
            assert!(
                matches!(s.authenticate(&bearer(bad)), Err(ApiError::Unauthorized(_))),
                "{bad}"
            );
        }
        assert!(s.authenticate(&HeaderMap::new()).is_err());
        let mut basic = HeaderMap::new();
        basic.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic dTpw"),
        );
        assert!(s.authenticate(&basic).is_err());
        let mut other_scheme = HeaderMap::new();
        other_scheme.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Token {good}")).expect("h"),
        );
        assert!(
            s.authenticate(&other_scheme).is_err(),
            "a valid token under another scheme"
        );
        clock.advance_ms(3601 * 1000 + LEEWAY_SECS * 1000);
        assert!(s.authenticate(&bearer(&good)).is_err(), "expired");
    }

    #[test]
    fn given_wrong_audience_or_hs512_when_verifying_then_401() {
        let (s, _) = sessions(KEY, None);
        let claims = Claims {
            sub: "u".into(),
            iat: T0 / 1000,
            nbf: T0 / 1000,
            exp: T0 / 1000 + 60,
            iss: "flowbotz-api".into(),
            aud: "someone-else".into(),
            jti: "j".into(),
            generation: 0,
        };
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(s.keys().current.kid.clone());
        let wrong_aud =
            jsonwebtoken::encode(&h, &claims, &EncodingKey::from_secret(KEY.as_bytes()))
                .expect("e");
        assert!(s.verify_access_token(&wrong_aud).is_err());
        let mut h512 = Header::new(Algorithm::HS512);
        h512.kid = h.kid.clone();
        let claims = Claims {
            aud: "flowbotz-clients".into(),
            ..claims
        };
        let hs512 = jsonwebtoken::encode(&h512, &claims, &EncodingKey::from_secret(KEY.as_bytes()))
            .expect("e");
        assert!(s.verify_access_token(&hs512).is_err());
        let ok = jsonwebtoken::encode(&h, &claims, &EncodingKey::from_secret(KEY.as_bytes()))
            .expect("e");
        assert!(s.verify_access_token(&ok).is_ok());
    }

    #[test]
    fn given_a_rotation_when_verifying_old_tokens_then_accepted_and_new_ones_use_new_key() {
        let (old, _) = sessions(KEY, None);
        let old_token = old.issue_access_token("u", 0).expect("t").token;
        let new_key = "rotated-jwt-key-0123456789abcdef-xyz";
        let (rotated, _) = sessions(new_key, Some(KEY));
        assert!(rotated.verify_access_token(&old_token).is_ok());
        let new_token = rotated.issue_access_token("u", 0).expect("t").token;
        assert!(
            old.verify_access_token(&new_token).is_err(),
            "old key alone no longer signs"
        );
        let (after, _) = sessions(new_key, None);
        assert!(after.verify_access_token(&old_token).is_err());
    }

    fn login(s: &Sessions, user: &str) -> Claims {
        s.issue_session(user, 0).expect("session").1
    }

    #[test]
    fn given_csrf_tokens_when_verifying_then_bound_to_the_session_and_time() {
        let (s, clock) = sessions(KEY, None);
        let alice = login(&s, "alice");
        let t = s.issue_csrf(&alice).token;
        assert!(s.verify_csrf(&t, &alice).is_ok());
        assert!(
            s.verify_csrf(&t, &login(&s, "bob")).is_err(),
            "another user"
        );
        assert!(
            s.verify_csrf(&t, &login(&s, "alice")).is_err(),
            "another login of the same user"
        );
        let mut forged = t.clone();
        forged.pop();
        forged.push(if t.ends_with('A') { 'B' } else { 'A' });
        assert!(s.verify_csrf(&forged, &alice).is_err());
        assert!(s.verify_csrf("v2.99999999999.x.y", &alice).is_err());
        let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
        for doctored in [format!("+{}", parts[1]), format!("0{}", parts[1])] {
            let expiry = std::mem::replace(&mut parts[1], doctored);
            assert!(
                s.verify_csrf(&parts.join("."), &alice).is_err(),
                "{}",
                parts[1]
            );
            parts[1] = expiry;
        }
        clock.advance_ms(3600 * 1000);
        assert!(s.verify_csrf(&t, &alice).is_err(), "expired");
    }

    #[test]
    fn given_a_session_shorter_than_the_csrf_lifetime_when_issuing_then_the_token_ends_with_it() {
        let (s, clock) = sessions(KEY, None);
        let mut short = login(&s, "u");
        short.exp = T0 / 1000 + 900;
        let t = s.issue_csrf(&short);
        assert_eq!(t.expires_in, 900, "never outlives the access token");
        assert!(s.verify_csrf(&t.token, &short).is_ok());
        clock.advance_ms(900 * 1000);
        assert!(s.verify_csrf(&t.token, &short).is_err());
    }

    fn signed(key: &str, kid: Option<String>, claims: &Claims) -> String {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = kid;
        jsonwebtoken::encode(&h, claims, &EncodingKey::from_secret(key.as_bytes())).expect("encode")
    }

    fn claims_at(now: u64) -> Claims {
        Claims {
            sub: "u".into(),
            iat: now,
            nbf: now,
            exp: now + 60,
            iss: "flowbotz-api".into(),
            aud: "flowbotz-clients".into(),
            jti: "j".into(),
            generation: 0,
        }
    }

    #[test]
    fn given_tokens_signed_with_the_key_but_outside_the_policy_when_verifying_then_refused() {
        let (s, _) = sessions(KEY, None);
        let now = T0 / 1000;
        let kid = Some(s.keys().current.kid.clone());
        let ttl = 3600;
        let with = |f: &dyn Fn(&mut Claims)| {
            let mut c = claims_at(now);
            f(&mut c);
            signed(KEY, kid.clone(), &c)
        };
        assert!(
            s.verify_access_token(&with(&|c| c.exp = now + ttl)).is_ok(),
            "the full lifetime"
        );
        let refused: [(&str, String); 4] = [
            ("ten years ahead", with(&|c| c.exp = now + 10 * 365 * 86400)),
            (
                "one second past the lifetime",
                with(&|c| c.exp = now + ttl + 1),
            ),
            (
                "iat in the future",
                with(&|c| {
                    c.iat = now + 10 * 365 * 86400;
                    c.exp = c.iat + 60;
                }),
            ),
            ("iat after exp", with(&|c| c.iat = c.exp + 1)),
        ];
        for (why, token) in refused {
            assert!(s.verify_access_token(&token).is_err(), "{why}");
        }
        assert!(
            s.verify_access_token(&with(&|c| c.iat = now + LEEWAY_SECS))
                .is_ok(),
            "iat inside the leeway"
        );
        let mut h = Header::new(Algorithm::HS256);
        h.kid = kid.clone();
        h.crit = Some(vec!["exp".into()]);
        let crit = jsonwebtoken::encode(
            &h,
            &claims_at(now),
            &EncodingKey::from_secret(KEY.as_bytes()),
        )
        .expect("encode");
        assert!(s.verify_access_token(&crit).is_err(), "a crit header");
        let huge = with(&|c| {
            c.iat = u64::MAX - 10;
            c.nbf = u64::MAX - 10;
            c.exp = u64::MAX;
        });
        assert!(
            s.verify_access_token(&huge).is_err(),
            "no overflow at u64::MAX"
        );
    }

    #[test]
    fn given_claim_edges_when_verifying_then_leeway_is_exact_and_empty_claims_refused() {
        let (s, clock) = sessions(KEY, None);
        let kid = Some(s.keys().current.kid.clone());
        let now = T0 / 1000;
        let ok = signed(KEY, kid.clone(), &claims_at(now));
        clock.set_ms((now + 60 + LEEWAY_SECS - 1) * 1000);
        assert!(s.verify_access_token(&ok).is_ok(), "inside the leeway");
        clock.set_ms((now + 60 + LEEWAY_SECS) * 1000);
        assert!(s.verify_access_token(&ok).is_err(), "past the leeway");
        clock.set_ms(T0);
        let future = Claims {
            nbf: now + LEEWAY_SECS + 1,
            ..claims_at(now)
        };
        assert!(
            s.verify_access_token(&signed(KEY, kid.clone(), &future))
                .is_err()
        );
        let soon = Claims {
            nbf: now + LEEWAY_SECS,
            ..claims_at(now)
        };
        assert!(
            s.verify_access_token(&signed(KEY, kid.clone(), &soon))
                .is_ok()
        );
        let no_sub = Claims {
            sub: String::new(),
            ..claims_at(now)
        };
        assert!(
            s.verify_access_token(&signed(KEY, kid.clone(), &no_sub))
                .is_err()
        );
        let no_jti = Claims {
            jti: String::new(),
            ..claims_at(now)
        };
        assert!(s.verify_access_token(&signed(KEY, kid, &no_jti)).is_err());
        assert!(
            s.verify_access_token(&signed(KEY, None, &claims_at(now)))
                .is_err(),
            "a kid is required"
        );
    }

    #[test]
    fn given_a_rotation_when_kids_do_not_match_their_keys_then_refused() {
        let old_key = "previous-jwt-key-0123456789abcdef-xyz";
        let (s, _) = sessions(KEY, Some(old_key));
        let now = T0 / 1000;
        let previous_kid = s.keys().previous.as_ref().map(|p| p.kid.clone());
        assert!(
            s.verify_access_token(&signed(old_key, previous_kid.clone(), &claims_at(now)))
                .is_ok()
        );
        assert!(
            s.verify_access_token(&signed(
                old_key,
                Some("someone-elses".into()),
                &claims_at(now)
            ))
            .is_err()
        );
        assert!(
            s.verify_access_token(&signed(KEY, previous_kid, &claims_at(now)))
                .is_err()
        );
        assert!(!format!("{s:?}").contains(KEY) && format!("{s:?}").starts_with("Sessions"));
        let mut empty = HeaderMap::new();
        empty.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer    "),
        );
        assert!(s.authenticate(&empty).is_err());
    }

    #[test]
    fn given_a_correctly_signed_csrf_token_expiring_too_late_when_verifying_then_refused() {
        let (s, _) = sessions(KEY, None);
        let now = T0 / 1000;
        let mut u = login(&s, "u");
        u.exp = now + 7200;
        let forge = |expires: u64, session: &Claims| {
            let tag = B64.encode(
                Sessions::csrf_mac(&s.keys().csrf, session, expires, "n")
                    .finalize()
                    .into_bytes(),
            );
            format!("v2.{expires}.n.{tag}")
        };
        assert!(s.verify_csrf(&forge(now + 3600, &u), &u).is_ok());
        assert!(
            s.verify_csrf(&forge(now + 3600 + LEEWAY_SECS, &u), &u)
                .is_ok()
        );
        assert!(
            s.verify_csrf(&forge(now + 3600 + LEEWAY_SECS + 1, &u), &u)
                .is_err(),
            "beyond the lifetime"
        );
        assert!(
            s.verify_csrf(&forge(now, &u), &u).is_err(),
            "expired at now"
        );
        assert!(s.verify_csrf(&forge(now + 1, &u), &u).is_ok());
        let mut short = u.clone();
        short.exp = now + 60;
        assert!(
            s.verify_csrf(&forge(now + 61, &short), &short).is_err(),
            "beyond the session"
        );
    }

    #[test]
    fn given_origins_when_checking_csrf_then_cross_site_is_refused() {
        let (s, _) = sessions(KEY, None);
        let cors = Cors::new(&["http://localhost:3000".to_string()], &[Method::POST]);
        let u = login(&s, "u");
        let token = s.issue_csrf(&u).token;
        let with = |pairs: &[(&'static str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(*k, HeaderValue::from_str(v).expect("v"));
            }
            h
        };
        assert!(
            s.check_csrf(&with(&[("x-csrf-token", &token)]), &u, &cors)
                .is_ok()
        );
        assert!(
            s.check_csrf(
                &with(&[
                    ("x-csrf-token", &token),
                    ("origin", "http://localhost:3000"),
                    ("sec-fetch-site", "cross-site")
                ]),
                &u,
                &cors
            )
            .is_ok()
        );
        let refused = [
            with(&[("x-csrf-token", &token), ("origin", "https://evil.example")]),
            with(&[("x-csrf-token", &token), ("sec-fetch-site", "cross-site")]),
            with(&[("x-csrf-token", &token), ("sec-fetch-site", "same-site")]),
            with(&[("origin", "http://localhost:3000")]),
        ];
        for h in refused {
            assert!(matches!(
                s.check_csrf(&h, &u, &cors),
                Err(ApiError::Forbidden(_))
            ));
        }
    }

    #[test]
    fn given_claims_without_gen_when_parsed_then_generation_0_and_gen_is_the_claim_name() {
        let old: Claims = serde_json::from_value(serde_json::json!({
            "sub": "u", "iat": 1, "nbf": 1, "exp": 2, "iss": "i", "aud": "a", "jti": "j"
        }))
        .expect("a token issued before generations parses");
        assert_eq!(old.generation, 0);
        let v = serde_json::to_value(Claims {
            generation: 7,
            ..old
        })
        .expect("json");
        assert_eq!(v["gen"], 7);
    }

    #[test]
    fn given_a_generation_when_issuing_then_the_verified_token_carries_it() {
        let (s, _) = sessions(KEY, None);
        let (issued, claims) = s.issue_session("u", 42).expect("session");
        assert_eq!(claims.generation, 42);
        assert_eq!(
            s.verify_access_token(&issued.token)
                .expect("valid")
                .generation,
            42
        );
    }
}
