-- Reverts 0004. It fails (and leaves the schema dirty) while two rows of a
-- table share an id in different topics or differ only in letter case, or
-- while an inbox holds one id of a group under several topics: deliver,
-- purge or delete such rows first.

ALTER TABLE txmsg_inbox
  DROP PRIMARY KEY,
  ADD PRIMARY KEY (consumer_group, msg_id),
  MODIFY topic VARCHAR(249) NOT NULL;

ALTER TABLE txmsg_dead_letters
  DROP PRIMARY KEY,
  MODIFY id    VARCHAR(64)  NOT NULL,
  MODIFY topic VARCHAR(249) NOT NULL,
  ADD PRIMARY KEY (id);

ALTER TABLE txmsg_checkback_ledger
  MODIFY msg_id VARCHAR(64) NOT NULL;

ALTER TABLE txmsg_half_checks
  MODIFY msg_id VARCHAR(64) NOT NULL;

ALTER TABLE txmsg_producer_groups
  DROP COLUMN delivery_order,
  MODIFY producer_group VARCHAR(128) NOT NULL;

ALTER TABLE txmsg_half_messages
  DROP KEY txmsg_half_messages_key,
  DROP KEY txmsg_half_messages_deliver,
  ADD KEY txmsg_half_messages_deliver (state, shard, seq),
  DROP KEY txmsg_half_messages_id,
  DROP COLUMN waits_for,
  MODIFY id             VARCHAR(64)  NOT NULL,
  MODIFY producer_group VARCHAR(128) NOT NULL,
  MODIFY topic          VARCHAR(249) NOT NULL,
  ADD UNIQUE KEY txmsg_half_messages_id (id);

ALTER TABLE txmsg_outbox
  DROP KEY txmsg_outbox_topic_id,
  MODIFY id    VARCHAR(64)  NOT NULL,
  MODIFY topic VARCHAR(249) NOT NULL,
  ADD UNIQUE KEY txmsg_outbox_id (id);
