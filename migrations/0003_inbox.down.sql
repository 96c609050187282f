DROP TABLE IF EXISTS txmsg_inbox;
