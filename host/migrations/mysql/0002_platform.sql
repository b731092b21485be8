-- What the platform adds, as in migrations/sqlite/0002: rule versions with their Wasm by
-- SHA-256, rule state, faults, and the dead-letter store. Wasm lives in a LONGBLOB; a
-- component larger than the server's max_allowed_packet (MariaDB 16 MiB, MySQL 64 MiB by
-- default) cannot be uploaded.
CREATE TABLE IF NOT EXISTS RuleVersions (
    RuleName         VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    Version          VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    Seq              BIGINT NOT NULL AUTO_INCREMENT,
    Sha256           VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    Wasm             LONGBLOB NOT NULL,
    Info             MEDIUMTEXT NOT NULL,
    Status           VARCHAR(16) NOT NULL DEFAULT 'ok',
    QuarantineReason MEDIUMTEXT,
    UploadedAtMs     BIGINT NOT NULL,
    PRIMARY KEY (RuleName, Version),
    UNIQUE INDEX RuleVersions_seq (Seq),
    CONSTRAINT RuleVersions_status CHECK (Status IN ('ok', 'quarantined'))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS Rules (
    RuleName      VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL PRIMARY KEY,
    ActiveVersion VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    Enabled       BOOLEAN NOT NULL,
    Params        MEDIUMTEXT NOT NULL,
    UpdatedAtMs   BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS RuleFaults (
    FaultID  BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    RuleName VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    Version  VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    Kind     VARCHAR(32) NOT NULL,
    Detail   MEDIUMTEXT NOT NULL,
    AtMs     BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Payload is at most 16 KiB of input, up to 3x that once invalid UTF-8 is replaced: MEDIUMTEXT.
CREATE TABLE IF NOT EXISTS DeadLetters (
    Fingerprint  VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL PRIMARY KEY,
    Seq          BIGINT NOT NULL AUTO_INCREMENT,
    Origin       TEXT NOT NULL,
    Reason       MEDIUMTEXT NOT NULL,
    Payload      MEDIUMTEXT NOT NULL,
    ReceivedAtMs BIGINT NOT NULL,
    UNIQUE INDEX DeadLetters_seq (Seq),
    INDEX DeadLetters_received (ReceivedAtMs, Seq)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
