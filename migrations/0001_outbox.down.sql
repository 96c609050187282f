DROP TABLE IF EXISTS txmsg_dead_letters;
DROP TABLE IF EXISTS txmsg_relay_members;
DROP TABLE IF EXISTS txmsg_relay_leases;
DROP TABLE IF EXISTS txmsg_outbox_delivered;
DROP TABLE IF EXISTS txmsg_outbox;
