-- People who use the admin (argon2 password hashes), their sessions and API tokens (only
-- SHA-256 hashes of the secrets are stored), and the append-only audit log. A clinician's
-- account points at their Subscriber row: the patients they follow are that subscriber's.
CREATE TABLE IF NOT EXISTS Users (
    UserID       TEXT PRIMARY KEY,
    Username     TEXT NOT NULL UNIQUE,
    PasswordHash TEXT NOT NULL,
    Role         TEXT NOT NULL CHECK (Role IN ('admin', 'clinician')),
    SubscriberID INTEGER,
    Disabled     INTEGER NOT NULL DEFAULT 0,
    CreatedAtMs  INTEGER NOT NULL,
    UpdatedAtMs  INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS Sessions (
    SessionHash  TEXT PRIMARY KEY,
    UserID       TEXT NOT NULL REFERENCES Users(UserID),
    CsrfToken    TEXT NOT NULL,
    CreatedAtMs  INTEGER NOT NULL,
    ExpiresAtMs  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS Sessions_user ON Sessions (UserID);
CREATE TABLE IF NOT EXISTS ApiTokens (
    TokenID      TEXT PRIMARY KEY,
    SecretHash   TEXT NOT NULL,
    Name         TEXT NOT NULL,
    Role         TEXT NOT NULL CHECK (Role IN ('admin', 'clinician', 'device')),
    UserID       TEXT,
    CreatedBy    TEXT NOT NULL,
    CreatedAtMs  INTEGER NOT NULL,
    ExpiresAtMs  INTEGER,
    RevokedAtMs  INTEGER
);
CREATE TABLE IF NOT EXISTS AuditLog (
    Seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    AtMs       INTEGER NOT NULL,
    Actor      TEXT NOT NULL,
    ActorRole  TEXT NOT NULL,
    Action     TEXT NOT NULL,
    Target     TEXT NOT NULL,
    BeforeJson TEXT,
    AfterJson  TEXT,
    Reason     TEXT
);
CREATE INDEX IF NOT EXISTS AuditLog_time ON AuditLog (AtMs);
-- Who uploaded each rule version.
ALTER TABLE RuleVersions ADD COLUMN UploadedBy TEXT;
-- An alert's lifecycle history: every acknowledgement, resolution and note, with who.
CREATE TABLE IF NOT EXISTS AlertEvents (
    Seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    AlertID TEXT NOT NULL,
    AtMs    INTEGER NOT NULL,
    Actor   TEXT NOT NULL,
    Action  TEXT NOT NULL,
    Note    TEXT
);
CREATE INDEX IF NOT EXISTS AlertEvents_alert ON AlertEvents (AlertID, Seq);
-- Directory rows history refers to are deleted softly.
ALTER TABLE Patient ADD COLUMN DeletedAtMs INTEGER;
ALTER TABLE DeviceStaticInfo ADD COLUMN DeletedAtMs INTEGER;
ALTER TABLE Subscriber ADD COLUMN DeletedAtMs INTEGER;
-- Shadow mode: a candidate version of a rule evaluates the live stream beside the active one;
-- what it would have raised is kept apart and never notified.
ALTER TABLE Rules ADD COLUMN ShadowVersion TEXT;
ALTER TABLE Rules ADD COLUMN ShadowParams TEXT;
CREATE TABLE IF NOT EXISTS ShadowAlerts (
    AlertID     TEXT PRIMARY KEY,
    ReadingID   TEXT NOT NULL,
    PatientID   INTEGER,
    DeviceID    INTEGER NOT NULL,
    Kind        TEXT NOT NULL,
    RuleName    TEXT NOT NULL,
    RuleVersion TEXT NOT NULL,
    Code        TEXT NOT NULL,
    Severity    TEXT NOT NULL,
    Message     TEXT NOT NULL,
    Value       REAL,
    TimestampMs INTEGER NOT NULL,
    CreatedAtMs INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ShadowAlerts_rule ON ShadowAlerts (RuleName, RuleVersion, TimestampMs);
