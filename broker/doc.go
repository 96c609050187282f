// Package broker is txmsg's half-message broker: a RocketMQ-style two-phase
// message on MySQL, delivered to Kafka by the relay engine.
//
// A producer prepares a message (it is stored, invisible), runs its local
// transaction, then commits or rolls the message back. Committed messages are
// delivered by relay.Engine through HalfSource, with the header
// txmsg-source: half and txmsg-id = the message id. A producer that goes
// silent is asked by the check-back Scanner, through the protocol of package
// checkback. The producer side (Client, Producer, the API's types) is package
// broker/halfmsg, which links neither this daemon nor kafka-go.
//
// Store holds the state machine on the txmsg_half_messages table:
//
//	prepared ─► committed ─► delivered
//	    ├─────► rolled_back
//	    └─────► discarded ─► committed | rolled_back   (Resolve, by an operator)
//
// Every transition is one conditional UPDATE (… WHERE state = ?), so commit
// and rollback are idempotent and race-safe: a repeated commit changes
// nothing and delivers once, a commit after a rollback (or the reverse) fails
// with txmsg.ErrConflict and changes nothing, and a commit that arrives while
// a check-back is in flight wins over the check's late answer.
//
// Handler serves the HTTP/JSON API (halfmsg.Client speaks it), and Server
// runs API, scanner and relay engine as one daemon.
//
// Security: every API request carries a bearer token, the operator's (which
// may do everything) or a producer group's (issued by Store.PutGroup, kept
// as a hash, and limited to the group's own messages); every change an Actor
// makes goes to the audit log. Check-backs are signed with the group's
// secret (checkback.SignatureHeader) and dialed through an AddressPolicy,
// so that a check-back URL cannot reach link-local, metadata or (unless
// allowed) loopback addresses, and no redirect is followed. SECURITY.md at
// the module root states the threat model.
package broker
