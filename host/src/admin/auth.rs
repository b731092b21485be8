//! Who is asking, and may they: password hashing (argon2id), browser sessions (an HttpOnly,
//! SameSite=Strict cookie, Secure under TLS, with a per-session CSRF token for unsafe
//! methods), API tokens (`Authorization: Bearer gg_<id>_<secret>`), login throttling, and
//! the guard every route passes through. Deny by default: a route states which roles may
//! call it ([`Access`]), and a request without a valid principal of one of them is refused.
//!
//! Secrets are random 256-bit values; the store keeps only their SHA-256 (a fast hash is
//! right for secrets with that much entropy, and lets a token be checked on every ingest
//! request). Passwords get argon2id.

use crate::model::{EpochMs, now_ms};
use crate::store::AdminStore;
use crate::store::accounts::{Actor, ApiToken, Role, Session, User};
use crate::store::directory::Visible;
use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use axum::http::{HeaderMap, Method};
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "gg_session";
/// The header carrying the session's CSRF token on unsafe requests.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a session lives after login.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// Which principals may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, signed in or not (`/health`, `/ready`, login).
    Public,
    /// Principals in one of these roles.
    Roles(&'static [Role]),
}

pub const ADMIN: Access = Access::Roles(&[Role::Admin]);
/// Admins and clinicians (clinicians see only the patients they follow).
pub const STAFF: Access = Access::Roles(&[Role::Clinician, Role::Admin]);
/// Devices and admins: posting readings.
pub const INGEST: Access = Access::Roles(&[Role::Device, Role::Admin]);
/// Anyone signed in, whatever the role (their own session).
pub const SIGNED_IN: Access = Access::Roles(&[Role::Device, Role::Clinician, Role::Admin]);

/// How a principal proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    Session { session_hash: String, csrf: String },
    Token { token_id: String },
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub actor: Actor,
    pub user: Option<User>,
    pub via: Via,
    /// The patients this principal may see.
    pub visible: Visible,
}

impl Principal {
    pub fn role(&self) -> Role {
        self.actor.role
    }
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No (valid) credentials: 401.
    Unauthenticated(&'static str),
    /// Valid credentials, not allowed: 403.
    Forbidden(String),
}

/// A random secret, hex.
pub fn secret(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// Compares without an early exit, so timing tells nothing about how much matched.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An argon2id hash (PHC string) of a password.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    rand::rng().fill_bytes(&mut salt);
    Argon2::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("cannot hash the password: {e}"))
}

pub fn verify_password(password: &str, hash: &str) -> bool {
    Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

/// What a password must be.
pub fn check_password_policy(password: &str) -> Result<(), String> {
    if password.chars().count() < 12 {
        return Err("a password needs at least 12 characters".to_owned());
    }
    if password.len() > 1024 {
        return Err("a password may have at most 1024 bytes".to_owned());
    }
    Ok(())
}

/// A hash to verify against when the user does not exist, so an unknown name costs the same
/// time as a wrong password.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| hash_password("not a real password, for timing").unwrap_or_default())
}

/// A new user record (id and hash made here).
pub fn new_user(
    username: &str,
    password: &str,
    role: Role,
    subscriber_id: Option<u64>,
) -> Result<User, String> {
    let username = normalize_username(username)?;
    if role == Role::Device {
        return Err("devices use API tokens, not accounts".to_owned());
    }
    check_password_policy(password)?;
    let now = now_ms();
    Ok(User {
        user_id: secret(8),
        username,
        password_hash: hash_password(password)?,
        role,
        subscriber_id,
        disabled: false,
        created_at_ms: now,
        updated_at_ms: now,
        glucose_unit: None,
    })
}

/// Usernames are compared lower-case; letters, digits and `._-@` only.
pub fn normalize_username(name: &str) -> Result<String, String> {
    let n = name.trim().to_lowercase();
    if n.is_empty() || n.len() > 64 {
        return Err("a username has 1 to 64 characters".to_owned());
    }
    if !n
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
    {
        return Err("a username may use letters, digits and . _ - @ only".to_owned());
    }
    Ok(n)
}

/// A freshly issued token: the record to store and the one-time secret to show.
pub fn new_token(
    name: &str,
    role: Role,
    user_id: Option<String>,
    created_by: &str,
    expires_at_ms: Option<EpochMs>,
) -> (ApiToken, String) {
    let id = secret(8);
    let secret = secret(32);
    let token = format!("gg_{id}_{secret}");
    (
        ApiToken {
            token_id: id,
            secret_hash: sha256_hex(&secret),
            name: name.to_owned(),
            role,
            user_id,
            created_by: created_by.to_owned(),
            created_at_ms: now_ms(),
            expires_at_ms,
            revoked_at_ms: None,
        },
        token,
    )
}

fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The `Set-Cookie` value of a new session.
pub fn session_cookie(secret: &str, secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}={secret}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_TTL.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that ends a session in the browser.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

async fn visible_for(store: &dyn AdminStore, role: Role, user: Option<&User>) -> Visible {
    match (role, user.and_then(|u| u.subscriber_id)) {
        (Role::Admin, _) => Visible::All,
        (_, Some(sub)) => match store.followed_patients(sub).await {
            Ok(p) => Visible::Only(p),
            // Deny by default: a lookup that fails shows nothing.
            Err(e) => {
                tracing::warn!(error = %e, "cannot read followed patients; showing none");
                Visible::Only(Vec::new())
            }
        },
        _ => Visible::Only(Vec::new()),
    }
}

/// Who sent this request, if anyone valid did. A bearer token wins over a cookie.
pub async fn authenticate(
    store: &dyn AdminStore,
    headers: &HeaderMap,
) -> Result<Option<Principal>, Denied> {
    let now = now_ms();
    if let Some(auth) = headers.get(axum::http::header::AUTHORIZATION) {
        let value = auth
            .to_str()
            .map_err(|_| Denied::Unauthenticated("malformed Authorization header"))?;
        let token = value
            .strip_prefix("Bearer ")
            .ok_or(Denied::Unauthenticated(
                "Authorization must be `Bearer <token>`",
            ))?;
        let (id, secret) = token
            .strip_prefix("gg_")
            .and_then(|t| t.split_once('_'))
            .ok_or(Denied::Unauthenticated("not a GlucoGuard token"))?;
        let record = store
            .token(id)
            .await
            .map_err(|_| Denied::Unauthenticated("token check failed"))?
            .ok_or(Denied::Unauthenticated("unknown or revoked token"))?;
        if !constant_time_eq(sha256_hex(secret).as_bytes(), record.secret_hash.as_bytes())
            || record.revoked_at_ms.is_some()
            || record.expires_at_ms.is_some_and(|e| e <= now)
        {
            return Err(Denied::Unauthenticated("unknown or revoked token"));
        }
        let user = match &record.user_id {
            Some(uid) => {
                let u = store
                    .user(uid)
                    .await
                    .map_err(|_| Denied::Unauthenticated("token check failed"))?
                    .filter(|u| !u.disabled)
                    .ok_or(Denied::Unauthenticated("the token's user is disabled"))?;
                Some(u)
            }
            None => None,
        };
        // A token never does more than its owner may.
        let role = user
            .as_ref()
            .map_or(record.role, |u| u.role.min(record.role));
        let visible = visible_for(store, role, user.as_ref()).await;
        return Ok(Some(Principal {
            actor: Actor {
                id: format!("token:{}", record.token_id),
                role,
            },
            user,
            via: Via::Token {
                token_id: record.token_id,
            },
            visible,
        }));
    }
    let Some(secret) = cookie(headers, SESSION_COOKIE).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let hash = sha256_hex(secret);
    let session: Option<Session> = store
        .session(&hash, now)
        .await
        .map_err(|_| Denied::Unauthenticated("session check failed"))?;
    let Some(session) = session else {
        return Err(Denied::Unauthenticated(
            "the session has expired; log in again",
        ));
    };
    let user = store
        .user(&session.user_id)
        .await
        .map_err(|_| Denied::Unauthenticated("session check failed"))?
        .filter(|u| !u.disabled)
        .ok_or(Denied::Unauthenticated("the account is disabled"))?;
    let visible = visible_for(store, user.role, Some(&user)).await;
    Ok(Some(Principal {
        actor: Actor {
            id: format!("user:{}", user.username),
            role: user.role,
        },
        via: Via::Session {
            session_hash: hash,
            csrf: session.csrf_token,
        },
        user: Some(user),
        visible,
    }))
}

/// Whether `principal` may make this request under `access`: the role, and for a
/// cookie-authenticated unsafe request the CSRF token and the browser's fetch site.
pub fn authorize(
    access: Access,
    principal: Option<&Principal>,
    method: &Method,
    headers: &HeaderMap,
) -> Result<(), Denied> {
    let Access::Roles(roles) = access else {
        return Ok(());
    };
    let p = principal.ok_or(Denied::Unauthenticated("log in or send an API token"))?;
    if !roles.contains(&p.role()) {
        return Err(Denied::Forbidden(format!(
            "the {} role may not do this",
            p.role().as_str()
        )));
    }
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if let Via::Session { csrf, .. } = &p.via
        && !safe
    {
        check_csrf(csrf, headers)?;
    }
    Ok(())
}

/// A browser form or script acting on a session must prove it came from our own pages: the
/// session's CSRF token in a header (which other sites cannot read or set), and, where the
/// browser says, a same-origin fetch.
pub fn check_csrf(csrf: &str, headers: &HeaderMap) -> Result<(), Denied> {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok())
        && !matches!(site, "same-origin" | "none")
    {
        return Err(Denied::Forbidden(format!(
            "cross-site request refused (Sec-Fetch-Site: {site})"
        )));
    }
    let sent = headers
        .get(CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !constant_time_eq(sent.as_bytes(), csrf.as_bytes()) {
        return Err(Denied::Forbidden(format!(
            "missing or wrong {CSRF_HEADER} header (the session's CSRF token, given at login)"
        )));
    }
    Ok(())
}

/// Failed logins per username, slowing guessing down: after `FREE_FAILURES` failures within
/// the window, each further attempt must wait twice as long as the last (capped).
#[derive(Debug, Default)]
pub struct Throttle {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

const FREE_FAILURES: u32 = 5;
const THROTTLE_WINDOW: Duration = Duration::from_secs(15 * 60);
const MAX_WAIT: Duration = Duration::from_secs(15 * 60);
/// Names tracked at most; beyond it the oldest entries go (a flood of made-up names must not
/// grow memory without bound).
const MAX_TRACKED: usize = 10_000;

impl Throttle {
    /// How long `username` must still wait before another attempt, if at all.
    pub fn wait(&self, username: &str) -> Option<Duration> {
        let map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let (n, last) = *map.get(username)?;
        if n < FREE_FAILURES || last.elapsed() > THROTTLE_WINDOW {
            return None;
        }
        let wait = Duration::from_secs(1u64 << (n - FREE_FAILURES).min(10)).min(MAX_WAIT);
        wait.checked_sub(last.elapsed())
    }

    pub fn failed(&self, username: &str) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_TRACKED && !map.contains_key(username) {
            map.retain(|_, (_, at)| at.elapsed() <= THROTTLE_WINDOW);
            if map.len() >= MAX_TRACKED
                && let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        let e = map
            .entry(username.to_owned())
            .or_insert((0, Instant::now()));
        if e.1.elapsed() > THROTTLE_WINDOW {
            e.0 = 0;
        }
        e.0 += 1;
        e.1 = Instant::now();
    }

    pub fn succeeded(&self, username: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(username);
    }
}

/// What a successful login answers.
#[derive(Debug, Serialize)]
pub struct LoginOk {
    pub username: String,
    pub role: Role,
    /// Send it as the `x-csrf-token` header on every unsafe request of this session.
    pub csrf_token: String,
    pub expires_at_ms: EpochMs,
}

/// Why a login failed.
#[derive(Debug, PartialEq, Eq)]
pub enum LoginError {
    /// Wrong name or password (which, is not said).
    Invalid,
    /// Too many failures: try again after this long.
    Throttled(Duration),
    Internal(String),
}

/// Checks a username and password and opens a session; the secret is for the cookie.
pub async fn login(
    store: &dyn AdminStore,
    throttle: &Throttle,
    username: &str,
    password: &str,
) -> Result<(LoginOk, String), LoginError> {
    let name = normalize_username(username).map_err(|_| LoginError::Invalid)?;
    if let Some(wait) = throttle.wait(&name) {
        return Err(LoginError::Throttled(wait));
    }
    let user = store
        .user_by_name(&name)
        .await
        .map_err(|e| LoginError::Internal(e.to_string()))?;
    let ok = match &user {
        Some(u) => verify_password(password, &u.password_hash) && !u.disabled,
        None => {
            verify_password(password, dummy_hash());
            false
        }
    };
    let Some(user) = user.filter(|_| ok) else {
        throttle.failed(&name);
        return Err(LoginError::Invalid);
    };
    throttle.succeeded(&name);
    let secret = secret(32);
    let now = now_ms();
    let session = Session {
        session_hash: sha256_hex(&secret),
        user_id: user.user_id.clone(),
        csrf_token: self::secret(16),
        created_at_ms: now,
        expires_at_ms: now + SESSION_TTL.as_millis() as i64,
    };
    store
        .create_session(&session)
        .await
        .map_err(|e| LoginError::Internal(e.to_string()))?;
    Ok((
        LoginOk {
            username: user.username,
            role: user.role,
            csrf_token: session.csrf_token,
            expires_at_ms: session.expires_at_ms,
        },
        secret,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_own_hash() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &h));
        assert!(!verify_password("correct horse batterY", &h));
    }

    #[test]
    fn the_throttle_makes_a_guesser_wait_longer_and_longer() {
        let t = Throttle::default();
        for _ in 0..FREE_FAILURES - 1 {
            t.failed("ann");
        }
        assert_eq!(t.wait("ann"), None, "the first failures are free");
        t.failed("ann");
        let first = t.wait("ann").expect("throttled after the free failures");
        t.failed("ann");
        let second = t.wait("ann").expect("still throttled");
        assert!(second > first, "{second:?} should exceed {first:?}");
        assert_eq!(t.wait("bob"), None, "other names are not affected");
        t.succeeded("ann");
        assert_eq!(t.wait("ann"), None);
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert("cookie", "a=1; gg_session=abc; b=2".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
    }
}
