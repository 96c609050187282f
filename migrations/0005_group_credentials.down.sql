ALTER TABLE txmsg_half_messages
  DROP KEY txmsg_half_messages_group_state;

ALTER TABLE txmsg_producer_groups
  DROP KEY txmsg_producer_groups_token,
  DROP COLUMN checkback_secret,
  DROP COLUMN token_hash;
