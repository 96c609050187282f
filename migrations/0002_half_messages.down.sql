DROP TABLE IF EXISTS txmsg_checkback_ledger;
DROP TABLE IF EXISTS txmsg_half_checks;
DROP TABLE IF EXISTS txmsg_producer_groups;
DROP TABLE IF EXISTS txmsg_half_messages;
