-- txmsg 0003: the consumer SDK's inbox, which turns at-least-once delivery
-- into effectively-once effects. Times are UTC DATETIME(6).

-- One row per message a consumer group has processed with a TxHandlerFunc,
-- inserted in the same transaction as the handler's own writes. msg_id is
-- the record's txmsg-id header, or "topic/partition/offset" without one.
CREATE TABLE IF NOT EXISTS txmsg_inbox (
  consumer_group  VARBINARY(255) NOT NULL,
  msg_id          VARBINARY(320) NOT NULL,
  topic           VARCHAR(249)   NOT NULL,
  kafka_partition INT            NOT NULL,
  kafka_offset    BIGINT         NOT NULL,
  processed_at    DATETIME(6)    NOT NULL,
  PRIMARY KEY (consumer_group, msg_id),
  KEY txmsg_inbox_purge (consumer_group, processed_at)
) ENGINE=InnoDB;
