package halfmsg

import "fmt"

// State is where a half message stands. It is stored as a TINYINT.
type State uint8

// States. The zero State is invalid.
const (
	// StatePrepared: stored, waiting for the producer's commit or rollback.
	StatePrepared State = iota + 1
	// StateCommitted: to be delivered by the relay.
	StateCommitted
	// StateDelivered: Kafka acknowledged it.
	StateDelivered
	// StateRolledBack: the producer (or a check-back) rolled it back; never
	// delivered.
	StateRolledBack
	// StateDiscarded: check-back got no answer within max checks; never
	// delivered unless an operator resolves it.
	StateDiscarded
	// StateDead: Kafka refused it for good; the relay moved it to
	// txmsg_dead_letters.
	StateDead
)

var stateNames = [...]string{
	StatePrepared:   "prepared",
	StateCommitted:  "committed",
	StateDelivered:  "delivered",
	StateRolledBack: "rolled_back",
	StateDiscarded:  "discarded",
	StateDead:       "dead",
}

// Valid reports whether s is one of the defined states.
func (s State) Valid() bool { return s >= StatePrepared && s <= StateDead }

// String returns the state's name, as used by the API and the CLI.
func (s State) String() string {
	if s.Valid() {
		return stateNames[s]
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// MarshalText implements encoding.TextMarshaler.
func (s State) MarshalText() ([]byte, error) {
	if !s.Valid() {
		return nil, fmt.Errorf("halfmsg: invalid state %d", uint8(s))
	}
	return []byte(s.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *State) UnmarshalText(b []byte) error {
	p, err := ParseState(string(b))
	if err != nil {
		return err
	}
	*s = p
	return nil
}

// ParseState parses a state name ("prepared", "committed", …).
func ParseState(name string) (State, error) {
	for i := StatePrepared; i <= StateDead; i++ {
		if stateNames[i] == name {
			return i, nil
		}
	}
	return 0, fmt.Errorf("halfmsg: unknown state %q: want prepared, committed, delivered, rolled_back, discarded or dead", name)
}
