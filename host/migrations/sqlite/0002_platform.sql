-- What the platform adds: rule versions with their Wasm by SHA-256, rule state, faults,
-- and the dead-letter store.
CREATE TABLE IF NOT EXISTS RuleVersions (
    RuleName         TEXT NOT NULL,
    Version          TEXT NOT NULL,
    Sha256           TEXT NOT NULL,
    Wasm             BLOB NOT NULL,
    Info             TEXT NOT NULL,
    Status           TEXT NOT NULL DEFAULT 'ok' CHECK (Status IN ('ok', 'quarantined')),
    QuarantineReason TEXT,
    UploadedAtMs     INTEGER NOT NULL,
    PRIMARY KEY (RuleName, Version)
);
CREATE TABLE IF NOT EXISTS Rules (
    RuleName      TEXT PRIMARY KEY,
    ActiveVersion TEXT NOT NULL,
    Enabled       INTEGER NOT NULL,
    Params        TEXT NOT NULL,
    UpdatedAtMs   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS RuleFaults (
    FaultID     INTEGER PRIMARY KEY AUTOINCREMENT,
    RuleName    TEXT NOT NULL,
    Version     TEXT NOT NULL,
    Kind        TEXT NOT NULL,
    Detail      TEXT NOT NULL,
    AtMs        INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS DeadLetters (
    Fingerprint  TEXT PRIMARY KEY,
    Origin       TEXT NOT NULL,
    Reason       TEXT NOT NULL,
    Payload      TEXT NOT NULL,
    ReceivedAtMs INTEGER NOT NULL
);
