-- txmsg 0001: the transactional outbox, relay leases and dead letters.
-- Times are UTC DATETIME(6). Works on MySQL 8.0.1+ and MariaDB 10.6+.

-- One row per message waiting for delivery; the relay deletes it once Kafka
-- acknowledged it. shard = murmur2(key) mod the relay's shard count, and
-- (shard, seq) is the clustered key: a shard's pending rows sit together in
-- delivery order, so the relay reads them with one range scan and shards
-- never touch each other's pages.
CREATE TABLE IF NOT EXISTS txmsg_outbox (
  seq        BIGINT UNSIGNED   NOT NULL AUTO_INCREMENT,
  shard      SMALLINT UNSIGNED NOT NULL,
  id         VARCHAR(64)       NOT NULL,
  topic      VARCHAR(249)      NOT NULL,
  msg_key    VARBINARY(767)    NULL,
  value      LONGBLOB          NOT NULL,
  headers    BLOB              NULL,
  created_at DATETIME(6)       NOT NULL,
  attempts   INT UNSIGNED      NOT NULL DEFAULT 0,
  last_error VARCHAR(1024)     NULL,
  PRIMARY KEY (shard, seq),
  KEY txmsg_outbox_seq (seq),
  UNIQUE KEY txmsg_outbox_id (id)
) ENGINE=InnoDB;

-- Delivered messages, kept only when the relay runs with a retention, then
-- purged in batches by delivered_at.
CREATE TABLE IF NOT EXISTS txmsg_outbox_delivered (
  seq          BIGINT UNSIGNED   NOT NULL,
  shard        SMALLINT UNSIGNED NOT NULL,
  id           VARCHAR(64)       NOT NULL,
  topic        VARCHAR(249)      NOT NULL,
  msg_key      VARBINARY(767)    NULL,
  value        LONGBLOB          NOT NULL,
  headers      BLOB              NULL,
  created_at   DATETIME(6)       NOT NULL,
  delivered_at DATETIME(6)       NOT NULL,
  PRIMARY KEY (shard, seq),
  KEY txmsg_outbox_delivered_at (delivered_at)
) ENGINE=InnoDB;

-- One row per (source, shard): who relays it, until when, and a fencing version
-- bumped on every change of owner.
CREATE TABLE IF NOT EXISTS txmsg_relay_leases (
  source     VARCHAR(16)       NOT NULL,
  shard      SMALLINT UNSIGNED NOT NULL,
  owner      VARCHAR(128)      NOT NULL DEFAULT '',
  version    BIGINT UNSIGNED   NOT NULL DEFAULT 0,
  expires_at DATETIME(6)       NOT NULL,
  PRIMARY KEY (source, shard)
) ENGINE=InnoDB;

-- Live relay engines per source, so each can take its fair share of the shards.
CREATE TABLE IF NOT EXISTS txmsg_relay_members (
  source     VARCHAR(16)  NOT NULL,
  owner      VARCHAR(128) NOT NULL,
  expires_at DATETIME(6)  NOT NULL,
  PRIMARY KEY (source, owner)
) ENGINE=InnoDB;

-- Messages Kafka rejected for good after the configured attempts.
CREATE TABLE IF NOT EXISTS txmsg_dead_letters (
  id         VARCHAR(64)    NOT NULL,
  source     VARCHAR(16)    NOT NULL,
  shard      SMALLINT UNSIGNED NOT NULL,
  topic      VARCHAR(249)   NOT NULL,
  msg_key    VARBINARY(767) NULL,
  value      LONGBLOB       NOT NULL,
  headers    BLOB           NULL,
  created_at DATETIME(6)    NOT NULL,
  attempts   INT UNSIGNED   NOT NULL,
  last_error VARCHAR(1024)  NOT NULL,
  dead_at    DATETIME(6)    NOT NULL,
  PRIMARY KEY (id),
  KEY txmsg_dead_letters_dead_at (dead_at)
) ENGINE=InnoDB;
