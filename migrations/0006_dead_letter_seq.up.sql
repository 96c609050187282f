-- txmsg 0006: every dead letter is kept. An id may be published again once
-- its message left the outbox, so a second message of one id and topic can
-- die too; keyed by (id, topic, source) the second overwrote the first. Dead
-- letters now have a seq of their own, and (id, topic, source) is an index.
ALTER TABLE txmsg_dead_letters
  DROP PRIMARY KEY,
  ADD COLUMN seq BIGINT UNSIGNED NOT NULL AUTO_INCREMENT FIRST,
  ADD PRIMARY KEY (seq),
  ADD KEY txmsg_dead_letters_id (id, topic, source);
