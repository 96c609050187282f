-- Before 0006 one dead letter was kept per (id, topic, source): the older
-- ones of such an id are deleted (the newest is kept, as 0005 would have).
DELETE d FROM txmsg_dead_letters d
JOIN txmsg_dead_letters n ON n.id = d.id AND n.topic = d.topic AND n.source = d.source AND n.seq > d.seq;

ALTER TABLE txmsg_dead_letters
  DROP PRIMARY KEY,
  DROP KEY txmsg_dead_letters_id,
  DROP COLUMN seq,
  ADD PRIMARY KEY (id, topic, source);
