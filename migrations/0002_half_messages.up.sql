-- txmsg 0002: half messages (prepare, commit or roll back, check-back), the
-- producer groups the broker asks, the history of check-backs, and the
-- producer-side check-back ledger. Times are UTC DATETIME(6).

-- One row per half message. state: 1 prepared, 2 committed, 3 delivered,
-- 4 rolled_back, 5 discarded, 6 dead (dead-lettered by the relay).
-- seq orders delivery within a shard; shard = murmur2(key) mod the relay's
-- shard count, computed at prepare. next_check_at is when the check-back
-- scanner may next ask the producer (it also leases an in-flight check).
-- Only two secondary indexes hold state, so a commit updates few entries.
CREATE TABLE IF NOT EXISTS txmsg_half_messages (
  seq               BIGINT UNSIGNED   NOT NULL AUTO_INCREMENT,
  id                VARCHAR(64)       NOT NULL,
  shard             SMALLINT UNSIGNED NOT NULL,
  state             TINYINT UNSIGNED  NOT NULL,
  producer_group    VARCHAR(128)      NOT NULL,
  topic             VARCHAR(249)      NOT NULL,
  msg_key           VARBINARY(767)    NULL,
  value             LONGBLOB          NOT NULL,
  headers           BLOB              NULL,
  checkback_url     VARCHAR(2048)     NULL,
  check_timeout_ms  INT UNSIGNED      NOT NULL,
  max_checks        INT UNSIGNED      NOT NULL,
  check_count       INT UNSIGNED      NOT NULL DEFAULT 0,
  next_check_at     DATETIME(6)       NOT NULL,
  last_check_at     DATETIME(6)       NULL,
  last_check_result VARCHAR(16)       NULL,
  last_check_error  VARCHAR(1024)     NULL,
  reason            VARCHAR(1024)     NULL,
  attempts          INT UNSIGNED      NOT NULL DEFAULT 0,
  last_error        VARCHAR(1024)     NULL,
  created_at        DATETIME(6)       NOT NULL,
  updated_at        DATETIME(6)       NOT NULL,
  resolved_at       DATETIME(6)       NULL,
  delivered_at      DATETIME(6)       NULL,
  PRIMARY KEY (seq),
  UNIQUE KEY txmsg_half_messages_id (id),
  KEY txmsg_half_messages_deliver (state, shard, seq),
  KEY txmsg_half_messages_due (state, next_check_at),
  KEY txmsg_half_messages_group (producer_group, seq),
  KEY txmsg_half_messages_delivered (delivered_at)
) ENGINE=InnoDB;

-- Where the broker asks a producer group about its prepared messages, unless
-- a message names its own checkback_url.
CREATE TABLE IF NOT EXISTS txmsg_producer_groups (
  producer_group VARCHAR(128)  NOT NULL,
  checkback_url  VARCHAR(2048) NOT NULL,
  updated_at     DATETIME(6)   NOT NULL,
  PRIMARY KEY (producer_group)
) ENGINE=InnoDB;

-- Every check-back the broker made: which message, which check, the answer
-- (commit, rollback, unknown, error) and how long it took.
CREATE TABLE IF NOT EXISTS txmsg_half_checks (
  seq        BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
  msg_id     VARCHAR(64)     NOT NULL,
  check_no   INT UNSIGNED    NOT NULL,
  result     VARCHAR(16)     NOT NULL,
  error      VARCHAR(1024)   NULL,
  latency_us BIGINT UNSIGNED NOT NULL,
  checked_at DATETIME(6)     NOT NULL,
  PRIMARY KEY (seq),
  KEY txmsg_half_checks_msg (msg_id, seq),
  KEY txmsg_half_checks_at (checked_at)
) ENGINE=InnoDB;

-- Producer side: one row per half message whose local transaction ran.
-- state 1 = committed (written inside the local transaction), 2 = rolled back
-- (inserted by a check-back that found no row; the late local transaction then
-- fails on the primary key). Old rows are deleted by the ledger cleanup job.
CREATE TABLE IF NOT EXISTS txmsg_checkback_ledger (
  msg_id     VARCHAR(64)      NOT NULL,
  state      TINYINT UNSIGNED NOT NULL,
  created_at DATETIME(6)      NOT NULL,
  PRIMARY KEY (msg_id),
  KEY txmsg_checkback_ledger_created (created_at)
) ENGINE=InnoDB;
