-- txmsg 0005: producer group credentials and the per-group prepared count.
-- token_hash is the hex SHA-256 of the group's API token (the token itself is
-- shown once and never stored). checkback_secret is the key the broker signs
-- the group's check-backs with: it must be usable, so it is stored as issued,
-- and never shown again. Groups registered before this migration have
-- neither until the operator rotates them.
ALTER TABLE txmsg_producer_groups
  ADD COLUMN token_hash       CHAR(64)     NULL,
  ADD COLUMN checkback_secret VARCHAR(128) NULL,
  ADD UNIQUE KEY txmsg_producer_groups_token (token_hash);

-- Counts a group's prepared messages (broker.max_prepared_per_group) by
-- reading only them.
ALTER TABLE txmsg_half_messages
  ADD KEY txmsg_half_messages_group_state (state, producer_group);
