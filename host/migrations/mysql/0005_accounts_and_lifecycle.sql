-- As migrations/sqlite/0005: accounts, sessions, API tokens, the audit log, who uploaded a
-- rule version, alert lifecycle events and soft deletes. Re-runnable like 0004.
CREATE TABLE IF NOT EXISTS Users (
    UserID       VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    Username     VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    PasswordHash VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    Role         VARCHAR(16) NOT NULL,
    SubscriberID BIGINT,
    Disabled     BOOLEAN NOT NULL DEFAULT 0,
    CreatedAtMs  BIGINT NOT NULL,
    UpdatedAtMs  BIGINT NOT NULL,
    UNIQUE INDEX Users_name (Username),
    CONSTRAINT Users_role CHECK (Role IN ('admin', 'clinician'))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
CREATE TABLE IF NOT EXISTS Sessions (
    SessionHash  VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    UserID       VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    CsrfToken    VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    CreatedAtMs  BIGINT NOT NULL,
    ExpiresAtMs  BIGINT NOT NULL,
    INDEX Sessions_user (UserID)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
CREATE TABLE IF NOT EXISTS ApiTokens (
    TokenID      VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
    SecretHash   VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    Name         VARCHAR(255) NOT NULL,
    Role         VARCHAR(16) NOT NULL,
    UserID       VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin,
    CreatedBy    VARCHAR(255) NOT NULL,
    CreatedAtMs  BIGINT NOT NULL,
    ExpiresAtMs  BIGINT,
    RevokedAtMs  BIGINT,
    CONSTRAINT ApiTokens_role CHECK (Role IN ('admin', 'clinician', 'device'))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
CREATE TABLE IF NOT EXISTS AuditLog (
    Seq        BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    AtMs       BIGINT NOT NULL,
    Actor      VARCHAR(255) NOT NULL,
    ActorRole  VARCHAR(16) NOT NULL,
    Action     VARCHAR(64) NOT NULL,
    Target     VARCHAR(255) NOT NULL,
    BeforeJson MEDIUMTEXT,
    AfterJson  MEDIUMTEXT,
    Reason     TEXT,
    INDEX AuditLog_time (AtMs)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
ALTER TABLE RuleVersions ADD COLUMN UploadedBy VARCHAR(255) NULL;
CREATE TABLE IF NOT EXISTS AlertEvents (
    Seq     BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    AlertID VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    AtMs    BIGINT NOT NULL,
    Actor   VARCHAR(255) NOT NULL,
    Action  VARCHAR(32) NOT NULL,
    Note    TEXT,
    INDEX AlertEvents_alert (AlertID, Seq)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
ALTER TABLE Patient ADD COLUMN DeletedAtMs BIGINT NULL;
ALTER TABLE DeviceStaticInfo ADD COLUMN DeletedAtMs BIGINT NULL;
ALTER TABLE Subscriber ADD COLUMN DeletedAtMs BIGINT NULL;
ALTER TABLE Rules ADD COLUMN ShadowVersion VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL;
ALTER TABLE Rules ADD COLUMN ShadowParams MEDIUMTEXT NULL;
CREATE TABLE IF NOT EXISTS ShadowAlerts (
    AlertID     VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL PRIMARY KEY,
    ReadingID   VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    PatientID   BIGINT,
    DeviceID    BIGINT NOT NULL,
    Kind        VARCHAR(16) NOT NULL,
    RuleName    VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    RuleVersion VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    Code        VARCHAR(128) NOT NULL,
    Severity    VARCHAR(16) NOT NULL,
    Message     MEDIUMTEXT NOT NULL,
    Value       DOUBLE,
    TimestampMs BIGINT NOT NULL,
    CreatedAtMs BIGINT NOT NULL,
    INDEX ShadowAlerts_rule (RuleName, RuleVersion, TimestampMs)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
