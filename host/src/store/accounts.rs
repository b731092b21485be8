//! Accounts and audit: users (argon2 password hashes, made by the admin layer), sessions and
//! API tokens (only SHA-256 hashes of their secrets), and the append-only audit log. Every
//! mutating role method takes an [`Audit`] and writes it in the same transaction as the
//! change, so no change is stored without its audit row, nor an audit row without its change.
//! Nothing here updates or deletes audit rows.

use super::rows::Columns;
use super::sql::{Arg, Sql, SqlEngine, q};
use super::{BoxFuture, StoreError};
use crate::model::{EpochMs, now_ms};
use serde::{Deserialize, Serialize};

/// A role a principal acts in. Ordered: each role may do what the ones before it may not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Posts readings and nothing else.
    Device,
    /// The patients they follow, their alerts and dashboards; rules read-only.
    Clinician,
    /// Everything.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Device => "device",
            Role::Clinician => "clinician",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "device" => Some(Role::Device),
            "clinician" => Some(Role::Clinician),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// The unit a user reads glucose in. Values are kept and sent in mg/dL everywhere; this is
/// only how pages show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum GlucoseUnit {
    #[default]
    #[serde(rename = "mg/dL")]
    MgDl,
    #[serde(rename = "mmol/L")]
    MmolL,
}

impl GlucoseUnit {
    pub fn as_str(self) -> &'static str {
        match self {
            GlucoseUnit::MgDl => "mg/dL",
            GlucoseUnit::MmolL => "mmol/L",
        }
    }

    pub fn parse(s: &str) -> Option<GlucoseUnit> {
        match s {
            "mg/dL" => Some(GlucoseUnit::MgDl),
            "mmol/L" => Some(GlucoseUnit::MmolL),
            _ => None,
        }
    }
}

fn role_col(row: &(impl Columns + ?Sized), col: &str) -> Result<Role, StoreError> {
    let r = row.text(col)?;
    Role::parse(&r).ok_or_else(|| StoreError::Corrupt(format!("{col} = {r}")))
}

/// Who acts: a signed-in user, a token, or the host itself. Every mutating call names one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// `user:<name>`, `token:<id>` or `system:<part>`.
    pub id: String,
    pub role: Role,
}

impl Actor {
    /// The host itself (config at start, the terminal): acts as admin.
    pub fn system(part: &str) -> Actor {
        Actor {
            id: format!("system:{part}"),
            role: Role::Admin,
        }
    }

    /// An audit entry of `action` on `target` by this actor.
    pub fn audit(&self, action: &str, target: impl Into<String>) -> Audit {
        Audit {
            actor: self.id.clone(),
            actor_role: self.role,
            action: action.to_owned(),
            target: target.into(),
            before: None,
            after: None,
            reason: None,
        }
    }
}

/// One audit entry as a mutating call gives it; the store adds the time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Audit {
    /// Who: `user:<name>`, `token:<id>`, or `system:<part>` (config at start, the CLI).
    pub actor: String,
    pub actor_role: Role,
    /// What, e.g. `rule.upload`, `rule.enable`, `patient.update`, `alert.acknowledge`.
    pub action: String,
    /// On what, e.g. `rule:default@1.0.0`, `patient:12`.
    pub target: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    pub reason: Option<String>,
}

impl Audit {
    /// An entry for a change the host makes itself (config at start, the terminal).
    pub fn system(part: &str, action: &str, target: impl Into<String>) -> Audit {
        Actor::system(part).audit(action, target)
    }

    pub fn with_reason(mut self, reason: Option<String>) -> Self {
        self.reason = reason;
        self
    }

    pub fn with_before(mut self, v: impl Serialize) -> Self {
        self.before = serde_json::to_value(v).ok();
        self
    }

    pub fn with_after(mut self, v: impl Serialize) -> Self {
        self.after = serde_json::to_value(v).ok();
        self
    }
}

/// A stored audit entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub at_ms: EpochMs,
    #[serde(flatten)]
    pub entry: Audit,
}

/// Which audit entries to list, newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    /// Prefix of the action, e.g. `rule.`.
    pub action: Option<String>,
    /// Prefix of the target, e.g. `rule:default`.
    pub target: Option<String>,
    /// Entries with a sequence number below this (paging backwards).
    pub before_seq: Option<u64>,
    pub limit: Option<u32>,
}

/// Appends `a` through `c` (inside the caller's transaction).
pub async fn append_audit(c: &mut (dyn Sql + '_), a: &Audit) -> Result<(), StoreError> {
    let json = |v: &Option<serde_json::Value>| v.as_ref().map(|v| v.to_string());
    q("INSERT INTO AuditLog (AtMs, Actor, ActorRole, Action, Target, BeforeJson, AfterJson, Reason) \
       VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
    .bind(now_ms())
    .bind(&a.actor)
    .bind(a.actor_role.as_str())
    .bind(&a.action)
    .bind(&a.target)
    .bind(json(&a.before))
    .bind(json(&a.after))
    .bind(&a.reason)
    .execute(c)
    .await?;
    Ok(())
}

/// A user account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub user_id: String,
    pub username: String,
    #[serde(skip_serializing)]
    pub password_hash: String,
    /// `admin` or `clinician` (devices use tokens, never accounts).
    pub role: Role,
    /// A clinician's subscriber row: they follow that subscriber's patients.
    pub subscriber_id: Option<u64>,
    pub disabled: bool,
    pub created_at_ms: EpochMs,
    pub updated_at_ms: EpochMs,
    /// How the user's pages show glucose; `None` until they choose (mg/dL).
    #[serde(default)]
    pub glucose_unit: Option<GlucoseUnit>,
}

/// A browser session: the store keeps the SHA-256 of the cookie's secret, never the secret.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub session_hash: String,
    pub user_id: String,
    pub csrf_token: String,
    pub created_at_ms: EpochMs,
    pub expires_at_ms: EpochMs,
}

/// An API token: `gg_<id>_<secret>`; the store keeps the SHA-256 of the secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiToken {
    pub token_id: String,
    #[serde(skip_serializing)]
    pub secret_hash: String,
    pub name: String,
    /// What the token may do: at most its owner's role.
    pub role: Role,
    /// The user it acts for (a clinician's token sees that clinician's patients).
    pub user_id: Option<String>,
    pub created_by: String,
    pub created_at_ms: EpochMs,
    pub expires_at_ms: Option<EpochMs>,
    pub revoked_at_ms: Option<EpochMs>,
}

pub trait AccountStore: Send + Sync + 'static {
    /// Creates a user; a taken username is a conflict.
    fn create_user<'a>(
        &'a self,
        u: &'a User,
        audit: &'a Audit,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Rewrites a user's role, subscriber, disabled flag, password hash and glucose unit.
    fn update_user<'a>(
        &'a self,
        u: &'a User,
        audit: &'a Audit,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    fn user_by_name<'a>(
        &'a self,
        username: &'a str,
    ) -> BoxFuture<'a, Result<Option<User>, StoreError>>;
    fn user<'a>(&'a self, user_id: &'a str) -> BoxFuture<'a, Result<Option<User>, StoreError>>;
    fn users(&self) -> BoxFuture<'_, Result<Vec<User>, StoreError>>;

    fn create_session<'a>(&'a self, s: &'a Session) -> BoxFuture<'a, Result<(), StoreError>>;
    /// The live (unexpired) session with this hash.
    fn session<'a>(
        &'a self,
        session_hash: &'a str,
        now_ms: EpochMs,
    ) -> BoxFuture<'a, Result<Option<Session>, StoreError>>;
    fn delete_session<'a>(&'a self, session_hash: &'a str)
    -> BoxFuture<'a, Result<(), StoreError>>;
    /// Ends every session of a user (disabled, password changed).
    fn delete_sessions_of<'a>(&'a self, user_id: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;

    fn create_token<'a>(
        &'a self,
        t: &'a ApiToken,
        audit: &'a Audit,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    fn token<'a>(
        &'a self,
        token_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ApiToken>, StoreError>>;
    fn tokens(&self) -> BoxFuture<'_, Result<Vec<ApiToken>, StoreError>>;
    /// Revokes a token; revoking a revoked token changes nothing.
    fn revoke_token<'a>(
        &'a self,
        token_id: &'a str,
        audit: &'a Audit,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Appends an entry for an action that changes nothing else in the store (a login, a
    /// backtest run).
    fn append_audit<'a>(&'a self, a: &'a Audit) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Newest first.
    fn audit_log<'a>(
        &'a self,
        f: &'a AuditFilter,
    ) -> BoxFuture<'a, Result<Vec<AuditRecord>, StoreError>>;
}

const USER_COLS: &str = "UserID, Username, PasswordHash, Role, SubscriberID, Disabled, CreatedAtMs, UpdatedAtMs, GlucoseUnit";
const TOKEN_COLS: &str =
    "TokenID, SecretHash, Name, Role, UserID, CreatedBy, CreatedAtMs, ExpiresAtMs, RevokedAtMs";

fn user(row: &(impl Columns + ?Sized)) -> Result<User, StoreError> {
    Ok(User {
        user_id: row.text("UserID")?,
        username: row.text("Username")?,
        password_hash: row.text("PasswordHash")?,
        role: role_col(row, "Role")?,
        subscriber_id: row.opt_id("SubscriberID")?,
        disabled: row.boolean("Disabled")?,
        created_at_ms: row.int("CreatedAtMs")?,
        updated_at_ms: row.int("UpdatedAtMs")?,
        glucose_unit: match row.opt_text("GlucoseUnit")? {
            None => None,
            Some(u) => Some(
                GlucoseUnit::parse(&u)
                    .ok_or_else(|| StoreError::Corrupt(format!("GlucoseUnit = {u}")))?,
            ),
        },
    })
}

fn token(row: &(impl Columns + ?Sized)) -> Result<ApiToken, StoreError> {
    Ok(ApiToken {
        token_id: row.text("TokenID")?,
        secret_hash: row.text("SecretHash")?,
        name: row.text("Name")?,
        role: role_col(row, "Role")?,
        user_id: row.opt_text("UserID")?,
        created_by: row.text("CreatedBy")?,
        created_at_ms: row.int("CreatedAtMs")?,
        expires_at_ms: row.opt_int("ExpiresAtMs")?,
        revoked_at_ms: row.opt_int("RevokedAtMs")?,
    })
}

fn audit_record(row: &(impl Columns + ?Sized)) -> Result<AuditRecord, StoreError> {
    let json = |col: &str| -> Result<Option<serde_json::Value>, StoreError> {
        row.opt_text(col)?
            .map(|t| {
                serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
            })
            .transpose()
    };
    Ok(AuditRecord {
        seq: row.id("Seq")?,
        at_ms: row.int("AtMs")?,
        entry: Audit {
            actor: row.text("Actor")?,
            actor_role: role_col(row, "ActorRole")?,
            action: row.text("Action")?,
            target: row.text("Target")?,
            before: json("BeforeJson")?,
            after: json("AfterJson")?,
            reason: row.opt_text("Reason")?,
        },
    })
}

/// `LIKE … ESCAPE '!'` pattern matching strings that start with `prefix` (its wildcards
/// escaped). `!`, not a backslash: MySQL reads backslashes in literals as escapes, SQLite does
/// not, so a backslash escape would differ between the engines.
pub fn prefix_pattern(prefix: &str) -> String {
    let mut p = String::with_capacity(prefix.len() + 1);
    for ch in prefix.chars() {
        if matches!(ch, '%' | '_' | '!') {
            p.push('!');
        }
        p.push(ch);
    }
    p.push('%');
    p
}

impl<E: SqlEngine> AccountStore for E {
    fn create_user<'a>(
        &'a self,
        u: &'a User,
        audit: &'a Audit,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut tx = self.begin().await?;
            let taken = q("SELECT UserID FROM Users WHERE Username = ?")
                .bind(&u.username)
                .fetch_optional(&mut *tx)
                .await?;
            if taken.is_some() {
                return Err(StoreError::Conflict(format!(
                    "user {} already exists",
                    u.username
                )));
            }
            q(format!(
                "INSERT INTO Users ({USER_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ))
            .bind(&u.user_id)
            .bind(&u.username)
            .bind(&u.password_hash)
            .bind(u.role.as_str())
            .bind(Arg::opt_id(u.subscriber_id))
            .bind(u.disabled)
            .bind(u.created_at_ms)
            .bind(u.updated_at_ms)
            .bind(u.glucose_unit.map(GlucoseUnit::as_str))
            .execute(&mut *tx)
            .await?;
            append_audit(&mut *tx, audit).await?;
            tx.commit().await
        })
    }

    fn update_user<'a>(
        &'a self,
        u: &'a User,
        audit: &'a Audit,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut tx = self.begin().await?;
            let n = q("UPDATE Users SET PasswordHash = ?, Role = ?, SubscriberID = ?, Disabled = ?, UpdatedAtMs = ?, GlucoseUnit = ? WHERE UserID = ?")
                .bind(&u.password_hash)
                .bind(u.role.as_str())
                .bind(Arg::opt_id(u.subscriber_id))
                .bind(u.disabled)
                .bind(u.updated_at_ms)
                .bind(u.glucose_unit.map(GlucoseUnit::as_str))
                .bind(&u.user_id)
                .execute(&mut *tx)
                .await?;
            if n == 0 {
                return Err(StoreError::NotFound(format!("user {}", u.username)));
            }
            append_audit(&mut *tx, audit).await?;
            tx.commit().await
        })
    }

    fn user_by_name<'a>(
        &'a self,
        username: &'a str,
    ) -> BoxFuture<'a, Result<Option<User>, StoreError>> {
        Box::pin(async move {
            q(format!("SELECT {USER_COLS} FROM Users WHERE Username = ?"))
                .bind(username)
                .fetch_optional(&mut *self.pooled())
                .await?
                .map(|r| user(&*r))
                .transpose()
        })
    }

    fn user<'a>(&'a self, user_id: &'a str) -> BoxFuture<'a, Result<Option<User>, StoreError>> {
        Box::pin(async move {
            q(format!("SELECT {USER_COLS} FROM Users WHERE UserID = ?"))
                .bind(user_id)
                .fetch_optional(&mut *self.pooled())
                .await?
                .map(|r| user(&*r))
                .transpose()
        })
    }

    fn users(&self) -> BoxFuture<'_, Result<Vec<User>, StoreError>> {
        Box::pin(async move {
            q(format!("SELECT {USER_COLS} FROM Users ORDER BY Username"))
                .fetch_all(&mut *self.pooled())
                .await?
                .iter()
                .map(|r| user(&**r))
                .collect()
        })
    }

    fn create_session<'a>(&'a self, s: &'a Session) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            q("INSERT INTO Sessions (SessionHash, UserID, CsrfToken, CreatedAtMs, ExpiresAtMs) VALUES (?, ?, ?, ?, ?)")
                .bind(&s.session_hash)
                .bind(&s.user_id)
                .bind(&s.csrf_token)
                .bind(s.created_at_ms)
                .bind(s.expires_at_ms)
                .execute(&mut *self.pooled())
                .await?;
            // Expired sessions of anyone go with each login: the table stays small.
            q("DELETE FROM Sessions WHERE ExpiresAtMs <= ?")
                .bind(s.created_at_ms)
                .execute(&mut *self.pooled())
                .await?;
            Ok(())
        })
    }

    fn session<'a>(
        &'a self,
        session_hash: &'a str,
        now_ms: EpochMs,
    ) -> BoxFuture<'a, Result<Option<Session>, StoreError>> {
        Box::pin(async move {
            let row = q(
                "SELECT SessionHash, UserID, CsrfToken, CreatedAtMs, ExpiresAtMs FROM Sessions \
                         WHERE SessionHash = ? AND ExpiresAtMs > ?",
            )
            .bind(session_hash)
            .bind(now_ms)
            .fetch_optional(&mut *self.pooled())
            .await?;
            row.map(|r| {
                Ok(Session {
                    session_hash: r.text("SessionHash")?,
                    user_id: r.text("UserID")?,
                    csrf_token: r.text("CsrfToken")?,
                    created_at_ms: r.int("CreatedAtMs")?,
                    expires_at_ms: r.int("ExpiresAtMs")?,
                })
            })
            .transpose()
        })
    }

    fn delete_session<'a>(
        &'a self,
        session_hash: &'a str,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            q("DELETE FROM Sessions WHERE SessionHash = ?")
                .bind(session_hash)
                .execute(&mut *self.pooled())
                .await?;
            Ok(())
        })
    }

    fn delete_sessions_of<'a>(&'a self, user_id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            q("DELETE FROM Sessions WHERE UserID = ?")
                .bind(user_id)
                .execute(&mut *self.pooled())
                .await?;
            Ok(())
        })
    }

    fn create_token<'a>(
        &'a self,
        t: &'a ApiToken,
        audit: &'a Audit,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut tx = self.begin().await?;
            q(format!(
                "INSERT INTO ApiTokens ({TOKEN_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            ))
            .bind(&t.token_id)
            .bind(&t.secret_hash)
            .bind(&t.name)
            .bind(t.role.as_str())
            .bind(&t.user_id)
            .bind(&t.created_by)
            .bind(t.created_at_ms)
            .bind(t.expires_at_ms)
            .bind(t.revoked_at_ms)
            .execute(&mut *tx)
            .await?;
            append_audit(&mut *tx, audit).await?;
            tx.commit().await
        })
    }

    fn token<'a>(
        &'a self,
        token_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<ApiToken>, StoreError>> {
        Box::pin(async move {
            q(format!(
                "SELECT {TOKEN_COLS} FROM ApiTokens WHERE TokenID = ?"
            ))
            .bind(token_id)
            .fetch_optional(&mut *self.pooled())
            .await?
            .map(|r| token(&*r))
            .transpose()
        })
    }

    fn tokens(&self) -> BoxFuture<'_, Result<Vec<ApiToken>, StoreError>> {
        Box::pin(async move {
            q(format!(
                "SELECT {TOKEN_COLS} FROM ApiTokens ORDER BY CreatedAtMs, TokenID"
            ))
            .fetch_all(&mut *self.pooled())
            .await?
            .iter()
            .map(|r| token(&**r))
            .collect()
        })
    }

    fn revoke_token<'a>(
        &'a self,
        token_id: &'a str,
        audit: &'a Audit,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let mut tx = self.begin().await?;
            let exists = q("SELECT TokenID FROM ApiTokens WHERE TokenID = ?")
                .bind(token_id)
                .fetch_optional(&mut *tx)
                .await?;
            if exists.is_none() {
                return Err(StoreError::NotFound(format!("token {token_id}")));
            }
            q("UPDATE ApiTokens SET RevokedAtMs = ? WHERE TokenID = ? AND RevokedAtMs IS NULL")
                .bind(now_ms())
                .bind(token_id)
                .execute(&mut *tx)
                .await?;
            append_audit(&mut *tx, audit).await?;
            tx.commit().await
        })
    }

    fn append_audit<'a>(&'a self, a: &'a Audit) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move { append_audit(&mut *self.pooled(), a).await })
    }

    fn audit_log<'a>(
        &'a self,
        f: &'a AuditFilter,
    ) -> BoxFuture<'a, Result<Vec<AuditRecord>, StoreError>> {
        Box::pin(async move {
            let mut sql = String::from(
                "SELECT Seq, AtMs, Actor, ActorRole, Action, Target, BeforeJson, AfterJson, Reason FROM AuditLog WHERE 1 = 1",
            );
            let mut args: Vec<Arg<'_>> = Vec::new();
            if let Some(a) = &f.actor {
                sql.push_str(" AND Actor = ?");
                args.push(a.into());
            }
            if let Some(a) = &f.action {
                sql.push_str(" AND Action LIKE ? ESCAPE '!'");
                args.push(prefix_pattern(a).into());
            }
            if let Some(t) = &f.target {
                sql.push_str(" AND Target LIKE ? ESCAPE '!'");
                args.push(prefix_pattern(t).into());
            }
            if let Some(s) = f.before_seq {
                sql.push_str(" AND Seq < ?");
                args.push(Arg::id(s));
            }
            sql.push_str(" ORDER BY Seq DESC LIMIT ?");
            args.push(f.limit.unwrap_or(100).min(1000).into());
            q(sql)
                .bind_all(args)
                .transient()
                .fetch_all(&mut *self.pooled())
                .await?
                .iter()
                .map(|r| audit_record(&**r))
                .collect()
        })
    }
}
