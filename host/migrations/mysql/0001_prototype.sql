-- The prototype's tables in MySQL/MariaDB's dialect, the same shape as migrations/sqlite/0001.
-- Timestamps are epoch milliseconds (UTC) in BIGINT. Fact tables (readings, telemetry, alerts)
-- carry no foreign keys: readings may arrive before the dimension rows that describe them.
-- Text ids use utf8mb4_bin so they compare byte for byte like SQLite's TEXT keys ('A' <> 'a').
-- Indexes are declared inside CREATE TABLE: MySQL has no CREATE INDEX IF NOT EXISTS, and DDL
-- commits implicitly, so every statement here must be safe to run again.
CREATE TABLE IF NOT EXISTS Patient (
    PatientID    BIGINT NOT NULL PRIMARY KEY,
    FirstName    TEXT NOT NULL,
    LastName     TEXT NOT NULL,
    DateOfBirth  TEXT,
    Sex          TEXT,
    Email        TEXT,
    Phone        TEXT,
    Profile      TEXT,
    DiabetesType TEXT,
    CreatedAtMs  BIGINT NOT NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS Manufacturer (
    ManufacturerID BIGINT NOT NULL PRIMARY KEY,
    Name           TEXT NOT NULL,
    Country        TEXT
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS DeviceStaticInfo (
    DeviceID        BIGINT NOT NULL PRIMARY KEY,
    ManufacturerID  BIGINT,
    PatientID       BIGINT,
    Model           TEXT,
    SerialNumber    TEXT,
    DeviceType      TEXT,
    FirmwareVersion TEXT,
    CONSTRAINT DeviceStaticInfo_manufacturer FOREIGN KEY (ManufacturerID) REFERENCES Manufacturer (ManufacturerID),
    CONSTRAINT DeviceStaticInfo_patient FOREIGN KEY (PatientID) REFERENCES Patient (PatientID)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS DeviceOperationalData (
    ReadingID          VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL PRIMARY KEY,
    DeviceID           BIGINT NOT NULL,
    TimestampMs        BIGINT NOT NULL,
    BatteryLevel       DOUBLE,
    FirmwareVersion    VARCHAR(128),
    ConnectivityStatus VARCHAR(32) NOT NULL,
    ErrorCodes         TEXT NOT NULL,
    ReceivedAtMs       BIGINT NOT NULL,
    INDEX DeviceOperationalData_device_time (DeviceID, TimestampMs),
    INDEX DeviceOperationalData_time (TimestampMs)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS GlucoseReadings (
    ReadingID    VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL PRIMARY KEY,
    PatientID    BIGINT NOT NULL,
    DeviceID     BIGINT NOT NULL,
    GlucoseLevel DOUBLE NOT NULL,
    TimestampMs  BIGINT NOT NULL,
    Location     VARCHAR(128),
    ReceivedAtMs BIGINT NOT NULL,
    INDEX GlucoseReadings_time (TimestampMs),
    INDEX GlucoseReadings_patient_time (PatientID, TimestampMs)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS Subscriber (
    SubscriberID   BIGINT NOT NULL PRIMARY KEY,
    Name           TEXT NOT NULL,
    Role           VARCHAR(16) NOT NULL,
    TelegramChatID BIGINT,
    Email          TEXT,
    CONSTRAINT Subscriber_role CHECK (Role IN ('patient', 'doctor', 'caregiver', 'app'))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS SubscribedPatients (
    SubscriberID BIGINT NOT NULL,
    PatientID    BIGINT NOT NULL,
    PRIMARY KEY (SubscriberID, PatientID),
    CONSTRAINT SubscribedPatients_subscriber FOREIGN KEY (SubscriberID) REFERENCES Subscriber (SubscriberID),
    CONSTRAINT SubscribedPatients_patient FOREIGN KEY (PatientID) REFERENCES Patient (PatientID)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Seq stands in for SQLite's rowid: insertion order, the tie-break for "newest first".
-- Message is MEDIUMTEXT because a rule may return up to engine.max_output_bytes (1 MiB) of text.
CREATE TABLE IF NOT EXISTS Alerts (
    AlertID     VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL PRIMARY KEY,
    Seq         BIGINT NOT NULL AUTO_INCREMENT,
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
    UNIQUE INDEX Alerts_seq (Seq),
    INDEX Alerts_patient_time (PatientID, TimestampMs),
    INDEX Alerts_created (CreatedAtMs, Seq)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE IF NOT EXISTS AlertLifecycle (
    AlertID          VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL PRIMARY KEY,
    Status           VARCHAR(16) NOT NULL,
    AcknowledgedBy   TEXT,
    AcknowledgedAtMs BIGINT,
    ResolvedBy       TEXT,
    ResolvedAtMs     BIGINT,
    UpdatedAtMs      BIGINT NOT NULL,
    CONSTRAINT AlertLifecycle_alert FOREIGN KEY (AlertID) REFERENCES Alerts (AlertID),
    CONSTRAINT AlertLifecycle_status CHECK (Status IN ('open', 'acknowledged', 'resolved', 'suppressed'))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
