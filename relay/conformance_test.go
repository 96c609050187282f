package relay_test

import (
	"context"
	"testing"

	"github.com/txmsg/txmsg"
	"github.com/txmsg/txmsg/internal/testenv"
	"github.com/txmsg/txmsg/outbox"
	"github.com/txmsg/txmsg/relay"
	"github.com/txmsg/txmsg/relay/relaytest"
)

func TestRelayOutboxSourceConformance(t *testing.T) {
	t.Parallel()
	for _, keep := range []bool{false, true} {
		name := map[bool]string{false: "delete", true: "keep"}[keep]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			relaytest.Run(t, func(t *testing.T) relaytest.Env {
				db := testenv.NewDB(t)
				pub, err := outbox.NewPublisher(outbox.WithShards(4))
				if err != nil {
					t.Fatal(err)
				}
				return relaytest.Env{
					Source: relay.NewOutboxSource(keep),
					DB:     db.DB,
					Shards: 4,
					Add: func(ctx context.Context, msgs ...txmsg.Message) error {
						return pub.Publish(ctx, db.DB, msgs...)
					},
					Keeps: keep,
				}
			})
		})
	}
}
