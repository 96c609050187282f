-- txmsg 0004: ids, producer groups and topics compare byte for byte, a message
-- id is unique per topic (one event may fan out to several topics under one
-- id), and a producer group chooses the delivery order of its half messages.
--
-- VARBINARY, not a _bin collation: utf8mb4_bin pads with spaces on MariaDB
-- ('a' = 'a '), and VARBINARY compares bytes on MySQL and MariaDB alike. The
-- ids, groups and topics the SDKs write are UTF-8 (topics ASCII), so the
-- conversion keeps every byte. The ALTERs rebuild the tables and hold back
-- writes meanwhile: on a large backlog or inbox, run it in a quiet moment.

ALTER TABLE txmsg_outbox
  MODIFY id    VARBINARY(64)  NOT NULL,
  MODIFY topic VARBINARY(249) NOT NULL,
  DROP KEY txmsg_outbox_id,
  ADD UNIQUE KEY txmsg_outbox_topic_id (topic, id);

-- waits_for: set when a message is committed while an earlier message of its
-- topic and key (lower seq) is still prepared; it holds that message's seq,
-- and the relay passes the row over until that message has left prepared
-- (see broker.HalfSource). NULL for every other row. It sits in the deliver
-- index before seq, so rows that wait are outside the range the relay reads.
-- The key index finds the earlier prepared messages of a topic and key.
ALTER TABLE txmsg_half_messages
  MODIFY id             VARBINARY(64)  NOT NULL,
  MODIFY producer_group VARBINARY(128) NOT NULL,
  MODIFY topic          VARBINARY(249) NOT NULL,
  ADD COLUMN waits_for BIGINT UNSIGNED NULL AFTER state,
  DROP KEY txmsg_half_messages_id,
  ADD UNIQUE KEY txmsg_half_messages_id (id, topic),
  DROP KEY txmsg_half_messages_deliver,
  ADD KEY txmsg_half_messages_deliver (state, shard, waits_for, seq),
  ADD KEY txmsg_half_messages_key (topic, msg_key, state, seq);

-- delivery_order: 1 prepare order (the default), 2 commit order.
ALTER TABLE txmsg_producer_groups
  MODIFY producer_group VARBINARY(128) NOT NULL,
  ADD COLUMN delivery_order TINYINT UNSIGNED NOT NULL DEFAULT 1;

ALTER TABLE txmsg_half_checks
  MODIFY msg_id VARBINARY(64) NOT NULL;

ALTER TABLE txmsg_checkback_ledger
  MODIFY msg_id VARBINARY(64) NOT NULL;

-- The outbox and the broker may each dead-letter a message of one id and
-- topic: neither overwrites the other.
ALTER TABLE txmsg_dead_letters
  MODIFY id    VARBINARY(64)  NOT NULL,
  MODIFY topic VARBINARY(249) NOT NULL,
  DROP PRIMARY KEY,
  ADD PRIMARY KEY (id, topic, source);

-- A group reading one id from several topics applies each copy once.
ALTER TABLE txmsg_inbox
  MODIFY topic VARBINARY(249) NOT NULL,
  DROP PRIMARY KEY,
  ADD PRIMARY KEY (consumer_group, topic, msg_id);
